"""The .mat adapters read files laid out like the public copies: key names, [H, W, C] cubes,
integer-scaled reflectance, 0 = unlabelled (classification), and each change set's own map
convention (Binary 0/1, River 0/255, Bay Area / Santa Barbara 0 unlabelled, 1 change, 2 none)."""
import numpy as np
import pytest
from fixtures import write_bay_area, write_indian_pines
from scipy.io import savemat

from specaware.finetune.datasets.mat import load_benchmark, load_change_benchmark

H, W = 10, 12
# name -> (image file, image key, gt file, gt key, bands, classes, dtype): public layouts
CLASSIFICATION = {
    "indian_pines": ("Indian_pines_corrected.mat", "indian_pines_corrected",
                     "Indian_pines_gt.mat", "indian_pines_gt", 200, 16, np.uint16),
    "pavia_university": ("PaviaU.mat", "paviaU", "PaviaU_gt.mat", "paviaU_gt", 103, 9, np.uint16),
    "salinas": ("Salinas_corrected.mat", "salinas_corrected", "Salinas_gt.mat", "salinas_gt",
                204, 16, np.int16),
    "houston2013": ("Houston.mat", "Houston", "Houston_gt.mat", "Houston_gt", 144, 15, np.uint16),
    "whu_hi_longkou": ("WHU_Hi_LongKou.mat", "WHU_Hi_LongKou", "WHU_Hi_LongKou_gt.mat",
                       "WHU_Hi_LongKou_gt", 270, 9, np.float32),
}


def _classification_files(tmp_path, name):
    image, ikey, gt, gkey, bands, k, dtype = CLASSIFICATION[name]
    rng = np.random.default_rng(0)
    scale = 1.0 if dtype == np.float32 else 10000.0
    cube = (rng.uniform(0.05, 0.6, (H, W, bands)) * scale).astype(dtype)
    labels = rng.integers(0, k + 1, (H, W)).astype(np.uint8)
    labels[0, :k] = np.arange(1, k + 1)[:W] if k <= W else labels[0, :k]
    labels[1, :2] = 0
    savemat(tmp_path / image, {ikey: cube})
    savemat(tmp_path / gt, {gkey: labels})
    return tmp_path / image, tmp_path / gt, cube, labels


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_classification_benchmark_reads_public_layout(tmp_path, name):
    image, gt, cube, raw = _classification_files(tmp_path, name)
    scene = load_benchmark(name, image, gt)
    bands, k = CLASSIFICATION[name][4], CLASSIFICATION[name][5]
    assert scene.scene.image.shape == (bands, H, W)
    wl = scene.scene.wavelength   # AVIRIS spectrometers overlap: not strictly increasing
    assert len(wl) == bands == len(np.unique(wl)) and 350 < wl.min() and wl.max() < 2600
    assert scene.num_classes == k
    assert np.array_equal(scene.labels, np.where(raw > 0, raw.astype(np.int64) - 1, -1))
    assert scene.labels[1, 0] == -1                      # 0 = unlabelled
    assert 0.0 < scene.scene.image.max() <= 1.0          # x10000 integers back to reflectance
    assert np.allclose(scene.scene.image[:, 2, 3], np.asarray(cube[2, 3], np.float64) /
                       (1 if cube.dtype == np.float32 else 10000), atol=1e-4)


def test_fixture_writer_and_file_wavelengths_win_over_the_table(tmp_path):
    image, gt = write_indian_pines(tmp_path)
    scene = load_benchmark("indian_pines", image, gt)
    assert scene.scene.approximate_wavelengths
    own = np.linspace(0.4, 2.5, 200)   # micrometres, as some copies store them
    from scipy.io import loadmat
    arrays = loadmat(image)
    savemat(image, {"indian_pines_corrected": arrays["indian_pines_corrected"],
                    "wavelength": own})
    scene = load_benchmark("indian_pines", image, gt)
    assert np.allclose(scene.scene.wavelength, own * 1000)
    assert not scene.scene.approximate_wavelengths


def test_wrong_key_lists_what_the_file_holds(tmp_path):
    image, gt, _, _ = _classification_files(tmp_path, "pavia_university")
    with pytest.raises(KeyError, match=r"paviaU \(10, 12, 103\).*image_key"):
        load_benchmark("pavia_university", image, gt, image_key="pavia_centre")


def test_band_count_mismatch_names_the_fix(tmp_path):
    savemat(tmp_path / "s.mat", {"salinas_corrected": np.ones((4, 4, 224), np.int16)})
    savemat(tmp_path / "g.mat", {"salinas_gt": np.ones((4, 4), np.uint8)})
    with pytest.raises(ValueError, match="224 bands.*wavelength="):
        load_benchmark("salinas", tmp_path / "s.mat", tmp_path / "g.mat")


def _pair(bands, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0.0, 0.5, (H, W, bands)) * 1000).astype(np.int16) for _ in range(2)]


def test_hermiston_and_farmland_one_file_with_t1_t2_binary(tmp_path):
    t1, t2 = _pair(154)
    binary = np.zeros((H, W), np.uint8)
    binary[2:5, 3:7] = 1
    for name, fname in (("hermiston", "USA_Change_Dataset.mat"),
                        ("farmland", "China_Change_Dataset.mat")):
        savemat(tmp_path / fname, {"T1": t1, "T2": t2, "Binary": binary})
        pair = load_change_benchmark(name, tmp_path / fname)
        assert pair.t1.image.shape == pair.t2.image.shape == (154, H, W)
        assert pair.labels.sum() == 12 and (pair.labels >= 0).all()   # every pixel labelled
        assert pair.class_names == ["no change", "change"]


def test_hermiston_multiclass_change_map_is_kept_when_asked(tmp_path):
    t1, t2 = _pair(242)
    gt = np.zeros((H, W), np.uint8)
    gt[1, :5] = np.arange(1, 6)
    savemat(tmp_path / "hermiston2004.mat", {"HypeRvieW": t1})
    savemat(tmp_path / "hermiston2007.mat", {"HypeRvieW": t2})
    savemat(tmp_path / "gt.mat", {"gt5clasesHermiston": gt})
    args = ("hermiston", tmp_path / "hermiston2004.mat", tmp_path / "hermiston2007.mat",
            tmp_path / "gt.mat")
    assert load_change_benchmark(*args).labels.max() == 1
    multi = load_change_benchmark(*args, num_classes=6)
    assert multi.labels[1, :5].tolist() == [1, 2, 3, 4, 5] and multi.num_classes == 6


def test_river_change_map_uses_255(tmp_path):
    t1, t2 = _pair(198)
    gt = np.zeros((H, W), np.uint8)
    gt[4:6, 4:6] = 255
    savemat(tmp_path / "river_before.mat", {"river_before": t1})
    savemat(tmp_path / "river_after.mat", {"river_after": t2})
    savemat(tmp_path / "groundtruth.mat", {"lakelabel_v1": gt})
    pair = load_change_benchmark("river", tmp_path / "river_before.mat",
                                 tmp_path / "river_after.mat", tmp_path / "groundtruth.mat")
    assert pair.labels.sum() == 4 and pair.labels.max() == 1


@pytest.mark.parametrize("name", ["bay_area", "santa_barbara"])
def test_bay_area_convention_zero_unlabelled_one_change_two_none(tmp_path, name):
    paths = write_bay_area(tmp_path, h=16, w=16)
    pair = load_change_benchmark(name, *paths)
    from scipy.io import loadmat
    raw = loadmat(paths[2])["HypeRvieW"]
    assert pair.t1.image.shape == (224, 16, 16) and pair.t1.sensor == "aviris-classic"
    expected = np.select([raw == 1, raw == 2], [1, 0], -1)
    assert np.array_equal(pair.labels, expected) and (pair.labels[:3] == -1).all()


def test_change_dates_on_different_grids_are_refused(tmp_path):
    t1, _ = _pair(154)
    savemat(tmp_path / "c.mat", {"T1": t1, "T2": t1[:-1], "Binary": np.zeros((H, W), np.uint8)})
    with pytest.raises(ValueError, match="same grid"):
        load_change_benchmark("farmland", tmp_path / "c.mat")
