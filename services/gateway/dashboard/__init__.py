"""The web dashboard `GET /` serves: static files and their pinned chart library."""
