"""The overseers' web view at /mail: server-rendered pages (Jinja2) with one small script that
listens to a project's event stream and swaps in the changed part of the page (docs/web.md)."""
