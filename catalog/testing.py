"""Writing small cloud-optimized GeoTIFFs for tests and demos, without GDAL.

For your own tests of code that reads through cogflight::

    from catalog.testing import synthetic_scene, write_cog

    pixels = synthetic_scene(512, 512, bands=1, seed=0)          # [C, H, W] uint16
    write_cog(tmp_path / "a.tif", pixels, epsg=32633, nodata=0,
              geotransform=(500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0), tile=256)

Files are laid out as COGs are (every IFD at the front, then tiles from the smallest
overview up), DEFLATE-compressed with a predictor, with overviews; GDAL reads them and
cogflight's tests check cogflight's pixels against GDAL's on them.
"""

from ._samples import SampleScene, synthetic_scene, write_cog, write_sample_scenes

__all__ = ["SampleScene", "synthetic_scene", "write_cog", "write_sample_scenes"]
