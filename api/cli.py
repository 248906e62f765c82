"""`countersign server ...`: initialise and run the service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from api.alerts.cli import deliver
from api.bootstrap import AlreadyInitialised, approve_user, init_data_dir, reset_admin
from api.console.provision import provision_on_server
from api.core.keys import KeyFileError
from api.core.settings import Settings, SettingsError, load_settings
from api.errors import AlreadyInitialisedError, NotConfigured, fail
from api.migrate import upgrade
from evidence.recovery import RecoveryKeyError

app = typer.Typer(no_args_is_help=True, help="Initialise and run the Countersign service.")

DataDir = Annotated[Path, typer.Option("--data", envvar="COUNTERSIGN_DATA_DIR", help="Service data directory.")]


def settings_for(data: Path) -> Settings:
    """The service's settings for --data; a bad COUNTERSIGN_* value is one line and exit 2."""
    try:
        return load_settings(data_dir=data)
    except SettingsError as exc:
        raise fail(NotConfigured(str(exc))) from exc


@app.command()
def init(
    data: DataDir,
    admin_name: Annotated[str, typer.Option(help="Name of the first admin.")] = "admin",
    exist_ok: Annotated[bool, typer.Option(help="Succeed quietly if already initialised (containers).")] = False,
    zero_knowledge: Annotated[
        bool,
        typer.Option(
            "--zero-knowledge",
            help="The service holds no evidence private key: devices seal to --offline-public-key only "
            "(see README 'Zero-knowledge mode').",
        ),
    ] = False,
    offline_public_key: Annotated[
        Path | None,
        typer.Option(help="With --zero-knowledge: the recovery-ID.public.json 'countersign recovery generate' wrote."),
    ] = None,
) -> None:
    """Create the database, the evidence key pair, the service signing key and a first admin token."""
    settings = settings_for(data)
    if zero_knowledge != (offline_public_key is not None):
        raise fail(NotConfigured("--zero-knowledge and --offline-public-key FILE go together"))
    try:
        result = init_data_dir(settings, admin_name, zero_knowledge=offline_public_key)
    except AlreadyInitialised as exc:
        if exist_ok:
            # Containers run this on every start: an existing deployment gets pending migrations.
            upgrade(settings.sqlalchemy_url)
            typer.echo(f"{data} is already initialised; schema upgraded to the latest revision")
            return
        raise fail(AlreadyInitialisedError(str(exc))) from exc
    except (SettingsError, KeyFileError, RecoveryKeyError) as exc:
        raise fail(NotConfigured(str(exc))) from exc
    if settings.development:
        typer.secho("development mode: private keys are NOT passphrase-protected", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"initialised {data}")
    mode = " (offline: zero-knowledge mode)" if zero_knowledge else ""
    typer.echo(f"evidence key id:     {result.evidence_key_id}{mode}")
    typer.echo(f"service public key:  {result.service_public_key}")
    typer.echo(f"admin token (shown once, store it safely): {result.admin_token}")


@app.command("approve-user")
def approve_user_command(
    data: DataDir,
    name: Annotated[str, typer.Argument(help="The officer or auditor whose access to approve.")],
) -> None:
    """Approve an officer's or auditor's access on the server (the first auditor; audited as the system)."""
    settings = settings_for(data)
    try:
        user = approve_user(settings, name)
    except (SettingsError, KeyFileError, ValueError) as exc:
        raise fail(NotConfigured(str(exc))) from exc
    typer.echo(f"approved {user.role} {user.name}")


@app.command("console-login")
def console_login_command(
    data: DataDir,
    name: Annotated[str, typer.Argument(help="The admin, officer or auditor to give a console sign-in.")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="COUNTERSIGN_CONSOLE_PASSWORD",
            help="At least 12 characters (asked for when not given).",
        ),
    ],
) -> None:
    """Set (or reset) a user's web console password and a new TOTP secret; prints the otpauth:// URI once."""
    settings = settings_for(data)
    try:
        done = provision_on_server(settings, name, password)
    except (SettingsError, KeyFileError, ValueError) as exc:
        raise fail(NotConfigured(str(exc))) from exc
    typer.echo(f"console sign-in set for {done.role} {done.user}; their earlier console sessions are ended")
    typer.echo("add this to their authenticator app (shown once, never again):")
    typer.echo(done.uri)


@app.command("reset-admin")
def reset_admin_command(
    data: DataDir,
    name: Annotated[str, typer.Option(help="The admin to give a new token (created if absent).")] = "admin",
) -> None:
    """Give an admin a new token when the old one is lost (run on the server; audited)."""
    settings = settings_for(data)
    try:
        token, created = reset_admin(settings, name)
    except (SettingsError, KeyFileError, ValueError) as exc:
        raise fail(NotConfigured(str(exc))) from exc
    typer.echo(f"{'created' if created else 'reset'} admin {name}")
    typer.echo(f"admin token (shown once, store it safely): {token}")


# uvicorn's own default is 5 s, the same as httpx's keep-alive expiry (the recorder's client): a
# device uploading every 5 s then sent on connections the service was closing, and got a
# transport error (retried) for one upload in a hundred (README, the soak).
KEEP_ALIVE_SECONDS = 20


@app.command()
def run(
    data: DataDir,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Serve HTTPS with this PEM certificate (chain); needs --tls-key."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The certificate's PEM private key (unencrypted).")
    ] = None,
    keep_alive: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds an idle connection is kept open; longer than clients keep theirs (httpx: 5 s), so a"
            " client never sends on a connection the service is closing.",
        ),
    ] = KEEP_ALIVE_SECONDS,
) -> None:
    """Serve the API with uvicorn (OpenAPI docs at /docs, health at /healthz)."""
    import uvicorn

    cert, key = _tls_files(tls_cert, tls_key)
    settings = settings_for(data)
    try:
        settings.passphrase()
        from api.app import create_app

        app_ = create_app(settings) if workers == 1 else None
    except (SettingsError, KeyFileError) as exc:
        raise fail(NotConfigured(str(exc))) from exc
    if app_ is not None:
        uvicorn.run(
            app_,
            host=host,
            port=port,
            log_level="info",
            ssl_certfile=cert,
            ssl_keyfile=key,
            timeout_keep_alive=keep_alive,
        )
    else:
        os.environ["COUNTERSIGN_DATA_DIR"] = str(data)
        _metrics_dir()  # before the workers start: they count into files there, /metrics adds them up
        uvicorn.run(
            "api.asgi:app",
            host=host,
            port=port,
            workers=workers,
            factory=False,
            log_level="info",
            ssl_certfile=cert,
            ssl_keyfile=key,
            timeout_keep_alive=keep_alive,
        )


# Help alerts: drain the outbox from the data directory (each running service does it too).
app.command("deliver")(deliver)


def _metrics_dir() -> None:
    """Several workers: prometheus_client's multiprocess mode needs a directory they share
    (PROMETHEUS_MULTIPROC_DIR). Use the operator's, emptied of an earlier run's files, or a new one."""
    import tempfile

    from api.core.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    path = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="countersign-metrics-")
    prepare_multiprocess_dir(path)
    os.environ[MULTIPROC_ENV] = path


def _tls_files(cert: Path | None, key: Path | None) -> tuple[str | None, str | None]:
    """uvicorn's ssl_certfile/ssl_keyfile, checked here first: a bad pair is one line and exit 2, not a traceback.

    Strict-Transport-Security is sent on every https answer (api.middleware.SecurityHeaders
    looks at the request's scheme), so nothing else needs to know that TLS is on.
    """
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        raise fail(NotConfigured("--tls-cert and --tls-key go together: give both, or neither for plain HTTP"))
    import ssl

    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise fail(NotConfigured(f"cannot read {option} {path}: {exc.strerror or exc}")) from exc
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key would make OpenSSL prompt for a passphrase; refuse it instead.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        if "KEY_VALUES_MISMATCH" in reason:
            message = f"--tls-key {key} is not the private key of --tls-cert {cert}"
        else:
            message = f"cannot use --tls-cert {cert} with --tls-key {key} ({reason}; an encrypted key is not supported)"
        raise fail(NotConfigured(message)) from exc
    return str(cert), str(key)
