"""The web console: officers (and later auditors and administrators) in a browser.

Server-rendered pages (Jinja2, autoescaped) under /console, every asset served by the service
itself, under a content security policy that allows this origin only and no inline script.
People sign in with a password (Argon2id) and a TOTP code; the session is a cookie whose hash
is in the database, and every state-changing form carries the session's CSRF token. The pages
call the same functions the API's routes are, so every scope check and audit entry is the API's.

Modules: passwords (Argon2id), totp (RFC 6238, replay-proof), accounts (provisioning, sign-in,
lockout), sessions (cookies, expiry, the signed-in user), csrf (form tokens, form bodies),
render (templates and headers), listen (purpose, grant, ranged audio), guard (signed in, officer,
CSRF checked), pages (the routes), casework (notes, incident flag, deletion request).
"""
