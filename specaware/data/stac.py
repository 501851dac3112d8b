"""STAC catalogues and APIs as scene sources for `specaware shard --stac` (docs/DATA_IN_THE_CLOUD.md).

    items = search("https://host/catalog.json", StacQuery(collections=["enmap-l2a"],
                   bbox=(10, 45, 12, 47), datetime="2024-01-01/2024-12-31", max_items=20))
    scenes = [item_scene(item) for item in items]   # (VRT path, provenance descriptors)

A root with a `search` link (a STAC API) is queried with GET /search (collections, bbox,
datetime, limit; `next` links followed); a static catalogue is walked through its `child` and
`item` links. Filters are applied to every item either way (a static catalogue has no server to
apply them). Plain JSON over http(s)://, s3:// or local files: no STAC library needed.

Spectral assets: the assets whose bands carry a centre wavelength, in `eo:bands` (STAC 1.0
eo extension, `center_wavelength` / `full_width_half_max` in micrometres) or `bands` (STAC
1.1, `eo:center_wavelength` ...); `raster:bands` supplies scale, offset and nodata. One
multi-band asset (EnMAP, EMIT, PRISMA COGs) or one asset per band (Sentinel-2, Landsat) become
one scene (products.stack_vrt); previews (roles visual/overview/thumbnail) and duplicate copies
of a band (the JP2 beside the COG) are left out. Each tile records its item id, collection,
datetime and asset hrefs in its descriptors.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from specaware.data.products import BandSource, stack_vrt
from specaware.data.raster import RasterMetadataError, may_hold_cube
from specaware.data.remote import redact

log = logging.getLogger(__name__)

PREVIEW_ROLES = {"visual", "overview", "thumbnail", "metadata"}
MAX_PAGES = 1000


class StacError(ValueError):
    """A catalogue or item that cannot be used; the message names the href and the fix."""


@dataclass
class StacQuery:
    """collections: ids (empty = all); bbox: (W, S, E, N) degrees; datetime: RFC 3339 instant
    or interval "start/end" (either side may be ".."); max_items: stop after this many."""

    collections: list[str] = field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    max_items: int | None = None


# --------------------------------------------------------------------------- fetching

def load_json(href: str) -> dict[str, Any]:
    from specaware.data import object_store

    try:
        if object_store.is_store_url(href):
            text = object_store.read_bytes(href)
        else:
            text = Path(href.removeprefix("file://")).read_bytes()
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as err:
        raise StacError(f"STAC document {redact(href)}: {err}") from None


def absolute(base: str, href: str) -> str:
    """`href` resolved against the document it was found in (URL or local path)."""
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        return urllib.parse.urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def _links(doc: dict, base: str, rel: str) -> list[str]:
    return [absolute(base, link["href"]) for link in doc.get("links", [])
            if link.get("rel") == rel and "href" in link]


# --------------------------------------------------------------------------- filters

def _parse_time(text: str | None, end: bool = False) -> datetime | None:
    if not text or text == "..":
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if len(text) <= 10 and end:  # a bare date as the end of an interval includes that day
        value = value.replace(hour=23, minute=59, second=59)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _interval(text: str | None) -> tuple[datetime | None, datetime | None]:
    if not text:
        return None, None
    start, _, stop = text.partition("/")
    return _parse_time(start), _parse_time(stop or start, end=True)


def matches(item: dict, query: StacQuery) -> bool:
    """True when `item` satisfies the query's collection, bbox and datetime filters."""
    if query.collections and item.get("collection") not in query.collections:
        return False
    if query.bbox and item.get("bbox"):
        w, s, e, n = query.bbox
        box = item["bbox"]
        if box[0] > e or box[2] < w or box[1] > n or box[3] < s:
            return False
    start, stop = _interval(query.datetime)
    props = item.get("properties", {})
    when = _parse_time(props.get("datetime") or props.get("start_datetime"))
    if when is not None and ((start and when < start) or (stop and when > stop)):
        return False
    return True


# --------------------------------------------------------------------------- search

def _walk(href: str, seen: set[str]) -> Iterator[tuple[dict, str]]:
    """(item, its href) of every item reachable from the catalogue at `href`."""
    if href in seen:
        return
    seen.add(href)
    doc = load_json(href)
    if doc.get("type") == "Feature":
        yield doc, href
        return
    if doc.get("type") == "FeatureCollection":
        yield from ((f, href) for f in doc.get("features", []))
        return
    for item_href in _links(doc, href, "item"):
        item = load_json(item_href)
        item.setdefault("collection", doc.get("id") if doc.get("type") == "Collection" else None)
        yield item, item_href
    for child in _links(doc, href, "child"):
        yield from _walk(child, seen)


def _api_pages(search_href: str, query: StacQuery) -> Iterator[tuple[dict, str]]:
    params = {"limit": str(min(query.max_items or 100, 100))}
    if query.collections:
        params["collections"] = ",".join(query.collections)
    if query.bbox:
        params["bbox"] = ",".join(f"{v:g}" for v in query.bbox)
    if query.datetime:
        params["datetime"] = query.datetime
    href = search_href + ("&" if "?" in search_href else "?") + urllib.parse.urlencode(params)
    for _ in range(MAX_PAGES):
        page = load_json(href)
        yield from ((f, href) for f in page.get("features", []))
        following = _links(page, href, "next")
        if not following or not page.get("features"):
            return
        href = following[0]


def search(root: str, query: StacQuery) -> list[tuple[dict, str]]:
    """(item, item href) of the items under `root` that match `query`, at most max_items."""
    doc = load_json(root)
    api = _links(doc, root, "search")
    found = _api_pages(api[0], query) if api else _walk(root, set())
    out = []
    for item, href in found:
        if matches(item, query):
            out.append((item, href))
            if query.max_items and len(out) >= query.max_items:
                break
    return out


# --------------------------------------------------------------------------- items -> scenes

def _band_lists(asset: dict) -> list[dict]:
    """Per-band dicts {wavelength nm, fwhm nm, name, scale, offset, nodata} of an asset."""
    eo = asset.get("eo:bands") or []
    v11 = asset.get("bands") or []
    raster = asset.get("raster:bands") or []
    count = max(len(eo), len(v11), len(raster))
    out = []
    for i in range(count):
        e = eo[i] if i < len(eo) else {}
        b = v11[i] if i < len(v11) else {}
        r = raster[i] if i < len(raster) else {}
        centre = e.get("center_wavelength", b.get("eo:center_wavelength"))
        width = e.get("full_width_half_max", b.get("eo:full_width_half_max"))
        out.append({"wavelength": None if centre is None else float(centre) * 1000.0,
                    "fwhm": None if width is None else float(width) * 1000.0,
                    "name": e.get("name") or b.get("name") or e.get("common_name") or "",
                    "scale": r.get("scale", b.get("raster:scale")),
                    "offset": r.get("offset", b.get("raster:offset")),
                    "nodata": r.get("nodata", b.get("nodata"))})
    return out


def spectral_assets(item: dict) -> list[tuple[str, dict, list[dict]]]:
    """(key, asset, bands) of the assets that carry wavelengths, previews and duplicate band
    copies left out; a multi-band asset wins over single-band ones when both exist."""
    chosen, seen = [], set()
    for key, asset in item.get("assets", {}).items():
        if PREVIEW_ROLES & set(asset.get("roles", [])):
            continue
        bands = _band_lists(asset)
        if not bands or any(b["wavelength"] is None for b in bands):
            continue
        ident = tuple(round(b["wavelength"], 1) for b in bands)
        if ident in seen:  # the same band(s) in another format
            continue
        seen.add(ident)
        chosen.append((key, asset, bands))
    multi = [c for c in chosen if len(c[2]) > 1]
    return multi if multi else chosen


_SIGNED: dict[tuple[str, str], str] = {}


def sign_href(href: str, signer: str) -> str:
    """`href` as the URL signer at `signer` returns it: GET `signer?href=<href>` answering
    {"href": signed URL} (Planetary Computer's /api/sas/v1/sign does). Cached per process;
    StacError naming the signer and the (redacted) href when it fails."""
    from specaware.data import object_store

    if (signer, href) not in _SIGNED:
        url = f"{signer}{'&' if '?' in signer else '?'}href={urllib.parse.quote(href, safe='')}"
        try:
            signed = json.loads(object_store.read_bytes(url))["href"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StacError(f"--stac-sign {redact(signer)}: could not sign {redact(href)} "
                            f"({type(err).__name__}: {redact(err)}); check the signer URL "
                            f"(it must answer ?href=URL with {{\"href\": signed URL}})") from None
        _SIGNED[(signer, href)] = str(signed)
    return _SIGNED[(signer, href)]


PRODUCT_TYPES = ("application/x-netcdf", "application/netcdf", "application/x-hdf5",
                 "application/x-hdf")


def product_assets(item: dict, wanted: list[str] | None = None) -> list[tuple[str, dict]]:
    """(key, asset) of the item's data assets that are whole NetCDF / HDF5 product files (an
    EMIT or PRISMA cube, whose reader finds the wavelengths in the file), or of the `wanted`
    keys. Previews and non-data roles are left out."""
    found = []
    for key, asset in item.get("assets", {}).items():
        if wanted:
            if key in wanted:
                found.append((key, asset))
            continue
        roles = set(asset.get("roles") or ["data"])
        media = str(asset.get("type", "")).split(";")[0].strip().lower()
        if "data" in roles and not PREVIEW_ROLES & roles and (
                media in PRODUCT_TYPES or may_hold_cube(asset.get("href", ""))):
            found.append((key, asset))
    return found


def _product_scene(item: dict, item_href: str, signer: str | None,
                   wanted: list[str] | None) -> tuple[str, dict[str, Any]]:
    """(the one product asset's URL, provenance) of an item without eo:bands."""
    ident, keys = item.get("id", "item"), list(item.get("assets", {}))
    found = product_assets(item, wanted)
    where = f"STAC item {ident} ({redact(item_href)})"
    if len(found) > 1:
        raise StacError(f"{where}: several product assets {[k for k, _ in found]}; choose one "
                        f"with --stac-asset KEY")
    if not found and wanted:
        raise StacError(f"{where}: assets {wanted} are not among its assets {keys}")
    if not found:
        raise StacError(f"{where}: no asset has eo:bands with center_wavelength nor is a "
                        f"NetCDF/HDF5 product (assets: {keys}); the catalogue must describe the "
                        f"bands, or shard the files with --sensor")
    href = absolute(item_href, found[0][1]["href"])
    return (sign_href(href, signer) if signer else href), _provenance(item, [href])


def _provenance(item: dict, hrefs: list[str]) -> dict[str, Any]:
    props = item.get("properties", {})
    return {"stac_item": item.get("id", "item"), "stac_collection": item.get("collection") or "",
            "datetime": props.get("datetime") or props.get("start_datetime") or "",
            "stac_asset_href": " ".join(redact(h) for h in hrefs)}


def item_scene(item: dict, item_href: str, out_dir: Path | None = None,
               signer: str | None = None, assets: list[str] | None = None
               ) -> tuple[Path | str, dict[str, Any]]:
    """(scene, provenance descriptors) for one STAC item: a VRT of its spectral bands, or,
    for an item whose assets carry no eo:bands, the URL of its one NetCDF / HDF5 product asset
    (`assets`: the keys to use), read by the product readers. `signer`: a URL signer
    (`sign_href`) for assets that are read through signed URLs only; the descriptors keep the
    unsigned hrefs (signatures expire and are secrets)."""
    if assets:
        return _product_scene(item, item_href, signer, assets)
    spectral = spectral_assets(item)
    ident = item.get("id", "item")
    if not spectral:
        return _product_scene(item, item_href, signer, None)
    sources = []
    for _, asset, bands in spectral:
        href = absolute(item_href, asset["href"])
        if signer:
            href = sign_href(href, signer)
        for i, band in enumerate(bands):
            sources.append(BandSource(href, i + 1, band["name"], band["wavelength"],
                                      band["fwhm"], band["scale"], band["offset"],
                                      band["nodata"]))
    sources.sort(key=lambda s: s.wavelength)
    descriptors = _provenance(item, [absolute(item_href, a["href"]) for _, a, _ in spectral])
    try:
        vrt = stack_vrt(sources, ident, {"wavelength_source": "STAC eo:bands"}, out_dir=out_dir)
    except RasterMetadataError as err:
        raise StacError(f"STAC item {ident}: {err}") from None
    return vrt, descriptors


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """"W,S,E,N" -> floats, with a clear error."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[0] > values[2] or values[1] > values[3]:
        raise StacError(f"--bbox {text!r}: expected W,S,E,N in degrees, e.g. 10.5,45,11,45.5")
    return values  # type: ignore[return-value]
