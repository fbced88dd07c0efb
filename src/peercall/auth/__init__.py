"""Who may connect as whom (signed tokens), and TURN credentials."""
