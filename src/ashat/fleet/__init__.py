"""Distribution to Licensed Mainframes (DESIGN §7): licenses, signed directives, rollouts."""
