{ config, pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];
  networking.hostName = "nixtest-ws";
  nix.settings.substituters = [ "http://cache.nixtest.internal:8080" ];
  services.xserver.enable = false; # headless here: the checks cover the base system
  system.stateVersion = "24.05";
}
