"""The public surface of errdefs is exactly ``__all__``, and documented."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

from ingestq import errdefs

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_exactly_the_public_surface() -> None:
    public = sorted(
        name
        for name in dir(errdefs)
        if not name.startswith("_") and not isinstance(getattr(errdefs, name), types.ModuleType)
    )
    assert sorted(errdefs.__all__) == public
    assert len(set(errdefs.__all__)) == len(errdefs.__all__)


def test_all_lists_the_agreed_api() -> None:
    kinds = set(errdefs.KINDS) | {"NotImplemented", "ErrdefsError"}
    predicates = {
        "is_aborted",
        "is_already_exists",
        "is_canceled",
        "is_data_loss",
        "is_deadline_exceeded",
        "is_failed_precondition",
        "is_internal",
        "is_invalid_argument",
        "is_not_found",
        "is_not_implemented",
        "is_out_of_range",
        "is_permission_denied",
        "is_resource_exhausted",
        "is_unauthenticated",
        "is_unavailable",
        "is_unknown",
    }
    functions = {
        "KINDS",
        "by_code",
        "resolve",
        "wrap",
        "from_exception",
        "to_grpc",
        "from_grpc",
        "ErrorRecord",
        "ErrorRecordDict",
        "to_record",
        "from_record",
        "record_to_json",
        "record_from_json",
        "to_json_dict",
        "from_json_dict",
    }
    assert set(errdefs.__all__) == kinds | predicates | functions


def test_every_export_documents_its_contract() -> None:
    for name in errdefs.__all__:
        value = getattr(errdefs, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_import_pulls_in_nothing_else_of_ingestq() -> None:
    script = (
        "import sys\n"
        "from ingestq import errdefs\n"
        "ours = {'ingestq.store', 'ingestq.tasks', 'ingestq.api', 'ingestq.worker',"
        " 'celery', 'grpc'}\n"
        "loaded = {'.'.join(name.split('.')[:2]) for name in sys.modules}"
        " | {name.split('.')[0] for name in sys.modules}\n"
        "assert not ours & loaded, ours & loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)


def test_import_loads_neither_protobuf_nor_celery() -> None:
    """protobuf comes in with the first use of the record codec, never with the import."""
    script = (
        "import sys\n"
        "import ingestq.errdefs\n"
        "assert 'google.protobuf' not in sys.modules\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'celery']\n"
        "ingestq.errdefs.to_json_dict(ingestq.errdefs.NotFound('x'))\n"
        "assert 'google.protobuf' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)


def test_package_is_typed() -> None:
    assert (ROOT / "ingestq" / "py.typed").is_file()
