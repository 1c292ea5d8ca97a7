"""The admin dashboard at /admin: server-rendered pages (Jinja2 templates in web/templates/admin), a
signed session cookie, CSRF tokens on every form, roles `admin` (everything) and `viewer` (read only).
Routes: web/admin/routes.py; the CLI's `lipameter admin create`: web/cli/admin.py."""
