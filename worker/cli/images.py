"""``ingestq images``: list (the default), ``rm NAME...`` and ``check NAME``.

``rm`` forgets names in ``index.json`` (NotFound, exit 15, for an unknown one after the
others are removed); their blobs go at the next ``ingestq gc``. ``check`` (like
``ctr images check``) walks an image's tree in the store (local or S3) and reports
blobs missing or committed with the wrong size (with ``--verify``, also those whose
bytes no longer match their digest), exiting 19 (FailedPrecondition) when incomplete;
manifests of other platforms that were not pulled are listed as absent, not missing.
"""

from __future__ import annotations

from pathlib import Path

import click

from ingestq import errdefs
from ingestq.worker.cli.common import (
    echo_json,
    handle_errors,
    open_cli_store,
    resolve_root,
    root_option,
)
from ingestq.worker.cli.progress import human_bytes


@click.group("images", invoke_without_command=True)
@click.option("-q", "--quiet", is_flag=True, help="Print names only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@click.pass_context
@handle_errors
def images_group(ctx: click.Context, quiet: bool, as_json: bool, root: Path | None) -> None:
    """List the images the store's index.json holds: NAME TYPE DIGEST SIZE PLATFORMS.

    DIGEST is the image's own digest (the registry's); an image recorded through an OCI
    view (a Docker schema2 image) shows the view's digest under "recorded" in --json.
    Subcommands remove names (rm) and check an image's blobs (check)."""
    if ctx.invoked_subcommand is not None:
        return
    from ingestq.images.size import list_images

    images = list_images(open_cli_store(root, write=True))
    if as_json:
        echo_json([image.to_json() for image in images])
        return
    if quiet:
        for image in images:
            click.echo(image.name)
        return
    header = ("NAME", "TYPE", "DIGEST", "SIZE", "PLATFORMS")
    table = [
        (
            i.name,
            _short_type(i.media_type),
            i.digest,
            human_bytes(i.size) if i.size is not None else "-",
            ",".join(i.platforms) or "-",
        )
        for i in images
    ]
    widths = [max(len(str(x[i])) for x in (header, *table)) for i in range(len(header))]
    for line in (header, *table):
        click.echo("  ".join(f"{c!s:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip())


def _short_type(media_type: str) -> str:
    from ingestq.fetch import manifests

    return {
        manifests.OCI_INDEX: "oci-index",
        manifests.OCI_MANIFEST: "oci-manifest",
        manifests.DOCKER_MANIFEST_LIST: "docker-list",
        manifests.DOCKER_MANIFEST: "docker-manifest",
    }.get(media_type, media_type)


@images_group.command("rm")
@click.argument("names", nargs=-1, required=True)
@root_option
@handle_errors
def rm_cmd(names: tuple[str, ...], root: Path | None) -> None:
    """Forget the images NAMES; print each one removed. Their blobs go at the next gc.
    An unknown name is reported (NotFound) after the others are removed."""
    from ingestq.store.images import image_index_of

    index = image_index_of(open_cli_store(root, write=True), resolve_root(root))
    first: errdefs.ErrdefsError | None = None
    for name in names:
        try:
            index.remove(name)
        except errdefs.NotFound as e:
            click.echo(f"ingestq: NotFound: {e}", err=True)
            first = first or e
            continue
        click.echo(name)
    if first is not None:
        raise first


@images_group.command("check")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verify", is_flag=True, help="Also read every blob back and check its digest.")
@root_option
@handle_errors
def check_cmd(name: str, as_json: bool, verify: bool, root: Path | None) -> None:
    """Report the blobs image NAME lacks: missing, or committed with another size (and
    with --verify, damaged: bytes that no longer match the digest). Exits 19
    (FailedPrecondition) when it is incomplete, 15 when NAME is not recorded."""
    from ingestq.store.local.store import LocalStore

    store = open_cli_store(root, write=True)
    if isinstance(store, LocalStore):
        from ingestq.store.gc import check_image

        check = check_image(store, name, verify=verify)
    else:
        from ingestq.s3.check import check_image as check_s3_image

        check = check_s3_image(store, name, verify=verify)
    if as_json:
        echo_json(check.to_json())
    else:
        state = "complete" if check.complete else "incomplete"
        click.echo(f"{check.name}  {check.digest}  {state}  ({check.present} blobs present)")
        for digest in check.missing:
            click.echo(f"missing     {digest}")
        for digest in check.incomplete:
            click.echo(f"incomplete  {digest}")
        for digest in check.damaged:
            click.echo(f"damaged     {digest}  (does not match its digest)")
        for digest in check.absent:
            click.echo(f"absent      {digest}  (platform not pulled)")
    if not check.complete:
        damaged = f", {len(check.damaged)} damaged" if check.damaged else ""
        raise errdefs.FailedPrecondition(
            f"image {name} is incomplete: {len(check.missing)} missing, "
            f"{len(check.incomplete)} incomplete{damaged}"
        )


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group."""
    cli.add_command(images_group)
