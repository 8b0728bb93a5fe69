"""The six verification checks of DESIGN §6, their runner, and the plug-in interface."""
