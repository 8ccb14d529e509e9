"""The review UI in the browser: server-rendered pages (Jinja2 templates) and vendored static files."""
