{ config, pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];
  networking.hostName = "nixtest-vm";
  nix.settings.substituters = [ "http://cache.nixtest.internal:8080" ];
  system.stateVersion = "24.05";
}
