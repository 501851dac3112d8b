"""Credentials for specaware's own HTTP requests: the GDAL settings a user already has for
/vsicurl/ (headers, bearer token, user:password, netrc) reach shard streams, manifests and
range reads too; Authorization never follows a redirect to another host; an Earthdata-style
login (redirect to a login host, netrc there, cookie back home) works. Loopback servers only."""
import base64

import pytest

from specaware.data import object_store
from specaware.data.http_auth import configured_headers
from specaware.data.remote import RemoteReadError, RetryPolicy
from specaware.testing_remote import http_server

FAST = RetryPolicy(attempts=0, delay=0.01, timeout=10)
SETTINGS = ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_AUTH", "GDAL_HTTP_BEARER",
            "GDAL_HTTP_USERPWD", "GDAL_HTTP_NETRC", "GDAL_HTTP_NETRC_FILE")


@pytest.fixture(autouse=True)
def no_settings(monkeypatch, tmp_path):
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GDAL_HTTP_NETRC_FILE", str(tmp_path / "no_netrc"))


@pytest.fixture
def served(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "data.bin").write_bytes(bytes(range(256)) * 4)
    with http_server(tmp_path / "www") as server:
        yield server


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("settings, expected", [
    ({"GDAL_HTTP_HEADERS": "Authorization: Bearer t0k\r\nX-Extra: a, b"},
     {"Authorization": "Bearer t0k", "X-Extra": "a, b"}),
    ({"GDAL_HTTP_HEADERS": 'Authorization: Bearer t0k,X-Extra: "a, b"'},
     {"Authorization": "Bearer t0k", "X-Extra": "a, b"}),
    ({"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": "t0k"}, {"Authorization": "Bearer t0k"}),
    ({"GDAL_HTTP_USERPWD": "me:pw"}, {"Authorization": _basic("me", "pw")}),
    ({"GDAL_HTTP_HEADERS": "Authorization: Bearer first", "GDAL_HTTP_USERPWD": "me:pw"},
     {"Authorization": "Bearer first"}),
])
def test_gdal_settings_become_headers(monkeypatch, settings, expected):
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    assert configured_headers("https://data.example/x.nc") == expected


def test_netrc_entry_of_the_host_and_only_that_host(monkeypatch, tmp_path):
    rc = tmp_path / "netrc"
    rc.write_text("machine data.example login me password pw\n")
    monkeypatch.setenv("GDAL_HTTP_NETRC_FILE", str(rc))
    assert configured_headers("https://data.example/x.nc") == {"Authorization": _basic("me", "pw")}
    assert configured_headers("https://other.example/x.nc") == {}
    monkeypatch.setenv("GDAL_HTTP_NETRC", "NO")
    assert configured_headers("https://data.example/x.nc") == {}


def test_a_protected_object_reads_with_the_token_and_is_refused_without(served, monkeypatch):
    served.faults["/data.bin"] = "auth"
    url = served.url("data.bin")
    with pytest.raises(RemoteReadError, match=r"access denied \(HTTP 403\).*GDAL_HTTP_BEARER"):
        object_store.read_range(url, 0, 4, FAST)
    monkeypatch.setenv("GDAL_HTTP_AUTH", "BEARER")
    monkeypatch.setenv("GDAL_HTTP_BEARER", "t0k")
    assert object_store.read_range(url, 4, 4, FAST) == bytes([4, 5, 6, 7])
    assert object_store.object_size(url, FAST) == 1024
    with object_store.open_stream(url, FAST) as stream:
        assert len(stream.read()) == 1024
    assert set(served.auth_seen["/data.bin"][1:]) == {"Bearer t0k"}


def test_authorization_does_not_follow_a_redirect_to_another_host(served, tmp_path,
                                                                  monkeypatch):
    """A data host answering with a redirect to another host (a pre-signed store URL): the
    token stays with the host it was set for; the range still arrives."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "data.bin").write_bytes(bytes(range(256)) * 4)
    with http_server(tmp_path / "store") as store:
        other = store.url("data.bin").replace("127.0.0.1", "localhost")
        served.faults["/data.bin"] = f"redirect:{other}"
        monkeypatch.setenv("GDAL_HTTP_HEADERS", "Authorization: Bearer t0k")
        assert object_store.read_range(served.url("data.bin"), 8, 4, FAST) == bytes(
            [8, 9, 10, 11])
        assert served.auth_seen["/data.bin"] == ["Bearer t0k"]
        assert store.auth_seen["/data.bin"] == [None]


def test_earthdata_style_login_with_netrc_and_a_cookie(served, tmp_path, monkeypatch):
    """The data host sends an unknown client to a login host (another host name), which
    checks the netrc credentials and sends it back with a code; the data host sets a cookie
    and serves. The data host never sees the password; later requests use the cookie."""
    with http_server(tmp_path) as login:
        login_url = login.url("login").replace("127.0.0.1", "localhost")
        login.faults["/login"] = "login:me:pw"
        served.faults["/data.bin"] = f"edl:{login_url}"
        rc = tmp_path / "netrc"
        rc.write_text("machine localhost login me password pw\n")
        monkeypatch.setenv("GDAL_HTTP_NETRC_FILE", str(rc))
        url = served.url("data.bin")
        assert object_store.read_range(url, 0, 4, FAST) == bytes([0, 1, 2, 3])
        assert object_store.read_range(url, 16, 2, FAST) == bytes([16, 17])
        assert login.auth_seen["/login"] == [_basic("me", "pw")]     # logged in once
        assert set(served.auth_seen["/data.bin"]) == {None}
        rc.write_text("machine localhost login me password wrong\n")
        monkeypatch.setattr("specaware.data.http_auth._OPENERS", {})  # a new process: no cookie
        with pytest.raises(RemoteReadError, match=r"HTTP 401"):
            object_store.read_range(url, 0, 4, FAST)


def test_a_broken_netrc_or_header_file_is_named_once_without_its_contents(monkeypatch, tmp_path,
                                                                           caplog):
    rc = tmp_path / "netrc"
    rc.write_text("machine data.example login me password secretpw\nmachine\n")
    monkeypatch.setenv("GDAL_HTTP_NETRC_FILE", str(rc))
    monkeypatch.setenv("GDAL_HTTP_HEADER_FILE", str(tmp_path / "missing_headers"))
    with caplog.at_level("WARNING", logger="specaware.data.http_auth"):
        assert configured_headers("https://data.example/x.nc") == {}
        assert configured_headers("https://data.example/y.nc") == {}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert any(str(rc) in w and "not a valid netrc" in w for w in warnings)
    assert any("missing_headers" in w and "cannot be read" in w for w in warnings)
    assert not any("secretpw" in w for w in warnings)
