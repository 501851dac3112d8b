"""Row order of NetCDF variables read through GDAL (docs/DATA_IN_THE_CLOUD.md, "NetCDF row
order").

GDAL's netCDF driver places rows by the y coordinate when it recognises a CF y axis
(`standard_name` projection_y_coordinate / latitude, `axis` Y, or units such as degrees_north):
a y axis stored south first is flipped so that row 0 is north, as in any north-up raster. When
it recognises none, the variable is not georeferenced and GDAL assumes the bottom-up storage of
its own legacy writer: it flips the rows anyway (config option GDAL_NETCDF_BOTTOMUP, default
YES; "behaves as designed", OSGeo/gdal#8477). Row 0 is then the *last* row stored: upside down
against numpy, xarray, h5py and netCDF4 views of the same file, and against label masks made
with them.

specaware reads such a variable in file order (row 0 = first row stored) and says so once per
file: the dataset is reopened with GDAL_NETCDF_BOTTOMUP=NO, an option GDAL reads when it opens
a file. It must not be set for every file: it also overrides the orientation GDAL takes from a
CF y axis, so a CF file stored south first would come out upside down under a north-up
transform. A VRT stacked from such variables (products.stack_vrt) carries the dataset tag
`netcdf_rows=file order` and is reopened the same way (its sources are opened under the
option). A user who sets GDAL_NETCDF_BOTTOMUP in the environment gets GDAL's behaviour of their
choice.
"""
from __future__ import annotations

import contextlib
import os
import re

TAG = "netcdf_rows"
FILE_ORDER = "file order"
_OPTION = "GDAL_NETCDF_BOTTOMUP"


def gdal_flips(src) -> bool:
    """True when GDAL opened `src` bottom-up for want of a y axis: a netCDF variable without a
    geotransform, or a VRT tagged by stack_vrt; False when the user set the option."""
    if _OPTION in os.environ:
        return False
    if src.tags().get(TAG) == FILE_ORDER:
        return True
    return src.driver == "netCDF" and src.transform.is_identity and not src.gcps[0]


def file_of(name: str) -> str:
    """The file of a GDAL NetCDF subdataset name (NETCDF:"file":var -> file), else `name`."""
    found = re.match(r'(?i)^netcdf:"?(.*?)"?:[^:"]+$', name)
    return found.group(1) if found else name


def in_file_order(src, reopen, where: str, stack: contextlib.ExitStack):
    """`src`, or when GDAL flipped it, the same dataset reopened by `reopen()` in file order
    (the option stays set in `stack` while it is read, for a VRT's lazily opened sources)."""
    import rasterio

    from specaware.data.cube_geo import note_once

    if not gdal_flips(src):
        return src
    src.close()
    stack.enter_context(rasterio.Env(**{_OPTION: "NO"}))
    if src.driver == "netCDF":
        note_once(file_of(where), "NetCDF variable without a CF y axis (no y coordinate with "
                  "standard_name projection_y_coordinate or latitude, or axis Y): not "
                  "georeferenced, rows read in file order (row 0 = first row stored; GDAL alone "
                  "would read them bottom-up). Add CF x/y coordinates for map-placed tiles")
    return reopen()
