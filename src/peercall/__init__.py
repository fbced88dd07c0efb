"""peercall: self-hostable peer-to-peer voice calls.

The server relays signaling (call requests, SDP, ICE candidates) over WebSocket; audio flows directly between the
two browsers (or Python clients) over WebRTC and never touches the server.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
