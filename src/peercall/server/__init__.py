"""The ASGI edge: HTTP routes, the /ws endpoint, and the uvicorn server that runs them."""
