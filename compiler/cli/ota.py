"""OTA commands of the `edgebuild` command line: the repository side (repo init/refresh/rotate-key,
publish, promote, serve) and the device side (device update/status/rollback).

They are attached to the main group in main.py; errors are UserErrors, printed there as one line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from compiler.progress import step

REPO_OPTION = click.option(
    "--repo", required=True, type=click.Path(path_type=Path), help="Repository directory (static files)."
)
KEYS_OPTION = click.option(
    "--keys",
    "keys_dir",
    type=click.Path(path_type=Path),
    help="Repository keys directory (default: $EDGEBUILD_REPO_KEYS, else ~/.config/edgebuild/repo-keys/...).",
)
CHANNEL_CHOICE = click.Choice(["beta", "stable"])


def _keystore(repo: Path, keys_dir: Path | None):  # type: ignore[no-untyped-def]
    from compiler.ota.keystore import Keystore

    return Keystore.for_repository(repo, keys_dir)


def _ensure_repository(repo: Path, keys_dir: Path | None) -> None:
    from compiler.ota.repository import ensure_repository

    ensure_repository(repo, keys_dir)


@click.group()
def repo() -> None:
    """Create and maintain an OTA repository (TUF metadata + bundles, served as static files)."""


@repo.command("init")
@REPO_OPTION
@KEYS_OPTION
def repo_init(repo: Path, keys_dir: Path | None) -> None:
    """Create an empty repository: root (threshold 2), targets, snapshot, timestamp keys and metadata."""
    from compiler.ota.repository import init_repository

    keys = _keystore(repo, keys_dir)
    init_repository(repo, keys)
    step(f"created repository {repo}; keys in {keys.directory} (development keys: keep them off the server)")
    step(f"ship {repo / 'metadata' / '1.root.json'} with devices as their bootstrap root")


@repo.command("refresh")
@REPO_OPTION
@KEYS_OPTION
@click.option("--days", default=1, show_default=True, help="Also re-sign every role expiring within this many days.")
def repo_refresh(repo: Path, keys_dir: Path | None, days: int) -> None:
    """Re-sign timestamp (run it more often than its 1-day expiry, e.g. from cron)."""
    from compiler.ota.repository import refresh

    written = refresh(repo, _keystore(repo, keys_dir), days=days)
    step(f"re-signed: {', '.join(written)}")


@repo.command("rotate-key")
@click.argument("role")
@REPO_OPTION
@KEYS_OPTION
def repo_rotate_key(role: str, repo: Path, keys_dir: Path | None) -> None:
    """Replace the key of ROLE (root, targets, snapshot, timestamp or a hardware target such as desktop-int8)."""
    from compiler.ota.repository import rotate_key

    written = rotate_key(repo, role, _keystore(repo, keys_dir))
    step(f"rotated the {role} key; wrote {', '.join(written)} (old key kept in the keys dir's retired/)")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@REPO_OPTION
@KEYS_OPTION
@click.option("--channel", type=click.Choice(["beta", "stable", "none"]), default="beta", show_default=True)
def publish(bundle: Path, repo: Path, keys_dir: Path | None, channel: str) -> None:
    """Add BUNDLE to the repository (creating it if needed), with a delta from the previous version."""
    from compiler.errors import UserError
    from compiler.ota.repository import publish as publish_bundle

    if not bundle.is_file():
        raise UserError(f"bundle {bundle} does not exist; build it with `make target=...` first")
    _ensure_repository(repo, keys_dir)
    started = time.perf_counter()
    result = publish_bundle(repo, bundle, _keystore(repo, keys_dir), None if channel == "none" else channel)
    if not result.changed:
        step(f"{bundle.name}: already published" + (f" on {channel}" if channel != "none" else ""))
        return
    step(f"published {result.bundle}" + (f" on channel {channel}" if channel != "none" else ""))
    if result.delta:
        size = (repo / "targets").rglob(f"*.{Path(result.delta).name}")
        delta_file = next(size, None)
        delta_bytes = delta_file.stat().st_size if delta_file else 0
        step(f"delta {result.delta} ({delta_bytes} bytes vs {bundle.stat().st_size} full)")
    step(f"metadata written: {', '.join(result.written)} ({time.perf_counter() - started:.1f} s)")


@click.command()
@click.argument("bundle", required=False)
@REPO_OPTION
@KEYS_OPTION
@click.option("--channel", type=CHANNEL_CHOICE, help="Default: stable for a bundle, the next channel for a release.")
@click.option(
    "--release",
    "release_file",
    type=click.Path(path_type=Path),
    help="Promote this release's bundles (its report must show every gate held and a publish).",
)
@click.option("--report-dir", type=click.Path(path_type=Path), help="Default: artifacts/releases/<release name>/.")
def promote(
    bundle: str | None,
    repo: Path,
    keys_dir: Path | None,
    channel: str | None,
    release_file: Path | None,
    report_dir: Path | None,
) -> None:
    """Point CHANNEL at an already published BUNDLE, or move a whole --release to its next channel."""
    from compiler.errors import UserError

    if (bundle is None) == (release_file is None):
        raise UserError("give a BUNDLE or --release FILE (one of them)")
    if release_file is not None:
        from compiler.release.config import load_release
        from compiler.release.pipeline import default_report_dir, promote_release

        definition = load_release(release_file)
        directory = report_dir or default_report_dir(definition.name)
        promote_release(definition, directory, repo, channel, keys_dir)
        return
    from compiler.ota.repository import promote as promote_bundle

    channel = channel or "stable"
    result = promote_bundle(repo, bundle, _keystore(repo, keys_dir), channel)
    step(f"{result.bundle}: " + ("promoted to " + channel if result.changed else f"already on {channel}"))


@click.command()
@REPO_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 to serve a LAN).")
@click.option("--port", default=8080, show_default=True, help="Port (0 picks a free one).")
def serve(repo: Path, host: str, port: int) -> None:
    """Serve the repository over HTTP (GET/HEAD with Range). Any static file server works too."""
    from compiler.errors import UserError
    from compiler.ota.server import serve as start

    if not (repo / "metadata" / "timestamp.json").is_file():
        raise UserError(f"no repository at {repo}: run `edgebuild publish BUNDLE --repo {repo}` first")
    server, thread = start(repo, host, port)
    address, bound = server.server_address[:2]
    click.echo(f"serving {repo} at http://{address}:{bound}/ (metadata/, targets/); Ctrl-C stops", err=True)
    sys.stderr.flush()
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


@click.group()
def device() -> None:
    """The device client: update from an OTA repository, show or roll back what is installed."""


@device.command("update")
@click.option("--repo-url", required=True, help="Base URL of the repository (serving metadata/ and targets/).")
@click.option("--profile", required=True, type=click.Path(path_type=Path), help="Device profile TOML.")
@click.option("--root", "root_path", required=True, type=click.Path(path_type=Path), help="Bootstrap root.json.")
@click.option("--install-dir", required=True, type=click.Path(path_type=Path), help="Slots, pointer, TUF cache.")
@click.option("--public-key", required=True, type=click.Path(path_type=Path), help="Bundle signing public key.")
@click.option("--channel", type=CHANNEL_CHOICE, help="Override the profile's channel.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait on the server per request/read.")
def device_update(
    repo_url: str,
    profile: Path,
    root_path: Path,
    install_dir: Path,
    public_key: Path,
    channel: str | None,
    timeout: float,
) -> None:
    """One update cycle: TUF refresh, choose, download (delta or full), verify, install, health-check."""
    from compiler.errors import UserError
    from compiler.ota.device import DeviceClient
    from compiler.ota.device_profile import load_profile

    if not root_path.is_file():
        raise UserError(f"bootstrap root {root_path} does not exist (ship the repository's 1.root.json)")
    if not public_key.is_file():
        raise UserError(f"public key {public_key} does not exist")
    client = DeviceClient(load_profile(profile), repo_url, root_path.read_bytes(), install_dir, public_key, timeout)
    try:
        outcome = client.update(channel)
    except UserError as error:
        for line in client.log:
            click.echo(f"device: {line}")
        installed = client.store.active()
        still = installed.label() if installed else "nothing installed"
        raise type(error)(f"{error} [device stays on {still}]") from error
    for line in outcome.log:
        click.echo(f"device: {line}")
    if outcome.installed is not None:
        via = f", via {outcome.via}" if outcome.via else ""
        click.echo(f"device: running {outcome.installed.label()} ({outcome.status}{via})")


@device.command("status")
@click.option("--install-dir", required=True, type=click.Path(path_type=Path))
def device_status(install_dir: Path) -> None:
    """What is installed and active."""
    from compiler.ota.slots import SlotStore

    store = SlotStore(install_dir)
    for line in store.recover():
        click.echo(f"device: {line}")
    active = store.active()
    described = f"{active.label()}, release counter {active.release_counter}" if active else "nothing installed"
    click.echo(f"device: {described}")


@device.command("rollback")
@click.option("--install-dir", required=True, type=click.Path(path_type=Path))
def device_rollback(install_dir: Path) -> None:
    """Switch back to the previously active bundle (kept intact in the other slot)."""
    from compiler.ota.slots import SlotStore

    click.echo(f"device: rolled back to {SlotStore(install_dir).rollback().label()}")


@click.command()
@REPO_OPTION
@KEYS_OPTION
@click.option("--channel", type=CHANNEL_CHOICE, default="beta", show_default=True)
@click.option("--fraction", type=float, required=True, help="Share of devices, above 0 and at most 1 (only grows).")
@click.option("--model", "models", multiple=True, help="Only this model (default: all the channel serves).")
@click.option("--target", "targets", multiple=True, help="Only this target (default: all).")
def rollout(
    repo: Path, keys_dir: Path | None, channel: str, fraction: float, models: tuple[str, ...], targets: tuple[str, ...]
) -> None:
    """Raise CHANNEL's staged-rollout fraction; each device decides by hashing its id, so none flips back."""
    from compiler.ota.repository import set_rollout

    bundles, written = set_rollout(repo, channel, fraction, _keystore(repo, keys_dir), models, targets)
    changed = ", ".join(written) or "no change"
    step(f"channel {channel}: {len(bundles)} bundles now reach {fraction:.0%} of devices ({changed})")


@click.command()
@REPO_OPTION
@KEYS_OPTION
@click.option("--channel", type=CHANNEL_CHOICE, required=True)
@click.option("--key", type=click.Path(path_type=Path), help="Release signing key (or EDGEBUILD_SIGNING_KEY).")
@click.option("--model", "models", multiple=True, help="Only this model (default: all the channel serves).")
@click.option("--target", "targets", multiple=True, help="Only this target (default: all).")
def rollback(
    repo: Path,
    keys_dir: Path | None,
    channel: str,
    key: Path | None,
    models: tuple[str, ...],
    targets: tuple[str, ...],
) -> None:
    """Point CHANNEL back to the previous release, re-issued under a higher release counter."""
    import tempfile

    from compiler.ota.repository import rollback as rollback_channel
    from compiler.release.pipeline import release_key

    signing_key = release_key(key)
    with tempfile.TemporaryDirectory(prefix="edgebuild-rollback-") as workdir:
        keys = _keystore(repo, keys_dir)
        results = rollback_channel(repo, channel, keys, signing_key, Path(workdir), models, targets)
    for result in results:
        step(f"channel {channel} now serves {result.bundle} (the earlier model under a higher release counter)")
    if results:
        step(f"metadata written: {', '.join(results[0].written)}")


COMMANDS = (repo, publish, promote, rollout, rollback, serve, device)
