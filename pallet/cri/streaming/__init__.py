"""pallet's streaming server: the HTTP endpoint behind CRI Exec/Attach/PortForward URLs.

Sans-I/O framing (websocket.py, channels.py), the request cache (tokens.py), the engine
interface (backend.py) and the threaded I/O server (server.py).
"""
