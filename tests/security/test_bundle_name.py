"""A signed bundle of another name does not replace the active one, through a real `pdp serve`.

Versions rank within one bundle name. The rollback check compared versions only, so a team's
`sandbox` bundle, validly signed by the same release key, served at a higher version by
whoever controls the source (or published to the wrong path), replaced `prod`. With
`--require-signature` a bundle of another name than the active (or cached) one is now refused
like a rollback; `--bundle-name NAME` says which name to serve, from the first poll, signed or
not; `--bundle-allow-rollback` remains the escape hatch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# tests/bundle on the path for its bundles and bundle server (real HTTP on 127.0.0.1).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import make_bundle, serve_bundles

from .test_redteam17_bundle_source import pdp_serve, signer  # noqa: F401 (a fixture)

NAME_REFUSED = "bundle name `sandbox` is not the active `prod`"


def test_a_signed_bundle_of_another_name_does_not_replace_the_active_one(
    signer: tuple[object, str],  # noqa: F811
) -> None:
    key, pub = signer
    signed = ("--require-signature", "--trust", pub)
    with (
        serve_bundles(make_bundle(2, key=key, name="prod")) as source,
        pdp_serve(source.url, *signed) as pdp,
    ):
        pdp.wait("prod 2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        assert pdp.allowed() == {"a2"}

        # The sandbox bundle, signed by the same key, at a higher version.
        source.set(make_bundle(3, key=key, name="sandbox"))
        got = pdp.wait("the name refusal", lambda i: NAME_REFUSED in i.last_error)
        assert (got.active_bundle.name, got.active_bundle.version) == ("prod", "2.0.0")
        assert pdp.allowed() == {"a2"}
        assert any("refused bundle from" in ln and NAME_REFUSED in ln for ln in pdp.log)

        # The next prod release is served, and clears the error.
        source.set(make_bundle(4, key=key, name="prod"))
        got = pdp.wait("prod 4.0.0", lambda i: i.active_bundle.version == "4.0.0")
        assert got.last_error == ""
        assert pdp.allowed() == {"a4"}
        assert not any("Traceback" in line for line in pdp.log)


def test_the_bundle_name_holds_from_the_start_and_for_unsigned_bundles() -> None:
    """Nothing is active at the first poll (or after a restart without a cache): the name the
    operator gave refuses a bundle of another name even then, signed or not."""
    with (
        serve_bundles(make_bundle(3, name="sandbox")) as source,
        pdp_serve(source.url, "--bundle-name", "prod") as pdp,
    ):
        got = pdp.wait("the name refusal", lambda i: "(--bundle-name)" in i.last_error)
        assert "bundle name `sandbox` is not `prod` (--bundle-name)" in got.last_error
        assert got.active_bundle.version == ""
        source.set(make_bundle(1, name="prod"))
        got = pdp.wait("prod 1.0.0", lambda i: i.active_bundle.name == "prod")
        assert got.active_bundle.version == "1.0.0" and got.last_error == ""
        assert pdp.allowed() == {"a1"}


def test_a_directory_source_serves_the_named_bundle(tmp_path: Path) -> None:
    """A directory holding two teams' bundles: with `--bundle-name` the highest version of that
    name is served, not the highest of all (which the name check would then refuse)."""
    (tmp_path / "prod-2.0.0.pdpb").write_bytes(make_bundle(2, name="prod"))
    (tmp_path / "sandbox-3.0.0.pdpb").write_bytes(make_bundle(3, name="sandbox"))
    with pdp_serve(str(tmp_path), "--bundle-name", "prod") as pdp:
        got = pdp.wait("prod", lambda i: i.active_bundle.name == "prod")
        assert got.active_bundle.version == "2.0.0" and got.last_error == ""
        assert pdp.allowed() == {"a2"}


def test_a_restart_judges_the_name_against_the_cached_bundle(
    tmp_path: Path,
    signer: tuple[object, str],  # noqa: F811
) -> None:
    key, pub = signer
    flags = ("--require-signature", "--trust", pub, "--cache-dir", str(tmp_path / "cache"))
    with serve_bundles(make_bundle(2, key=key, name="prod")) as source:
        with pdp_serve(source.url, *flags) as pdp:
            pdp.wait("prod 2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        source.set(make_bundle(3, key=key, name="sandbox"))
        with pdp_serve(source.url, *flags) as pdp:
            cached = "bundle name `sandbox` is not the cached `prod`"
            # The cached bundle serves first, then the source's is refused: wait for both.
            got = pdp.wait(
                "the name refusal and the cached bundle",
                lambda i: cached in i.last_error and i.active_bundle.version != "",
            )
            assert (got.active_bundle.name, got.active_bundle.version) == ("prod", "2.0.0")
            assert pdp.allowed() == {"a2"}


def test_allow_rollback_lets_the_operator_switch_names(
    signer: tuple[object, str],  # noqa: F811
) -> None:
    key, pub = signer
    flags = ("--require-signature", "--trust", pub, "--bundle-allow-rollback")
    with (
        serve_bundles(make_bundle(2, key=key, name="prod")) as source,
        pdp_serve(source.url, *flags) as pdp,
    ):
        pdp.wait("prod 2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        source.set(make_bundle(1, key=key, name="staging"))
        got = pdp.wait("staging", lambda i: i.active_bundle.name == "staging")
        assert got.active_bundle.version == "1.0.0" and got.last_error == ""
        assert pdp.allowed() == {"a1"}


@pytest.mark.parametrize("name", ["", "../prod", "prod\n"])
def test_a_bad_bundle_name_is_a_startup_error(name: str) -> None:
    serve = [sys.executable, "-m", "pdp.cli.main", "serve", "--listen", "127.0.0.1:0"]
    done = subprocess.run(
        [*serve, "--bundle", "http://127.0.0.1:9/bundle.pdpb", "--bundle-name", name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stderr
    assert "is not a valid bundle name" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
