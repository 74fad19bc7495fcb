{ config, pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];
  networking.hostName = "nixtest-srv";
  nix.settings.substituters = [ "http://cache.nixtest.internal:8080" ];
  services.openssh.enable = true;
  system.stateVersion = "24.05";
}
