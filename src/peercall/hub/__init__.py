"""Who is connected, and how a frame gets from one client to another."""
