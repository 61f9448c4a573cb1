"""research/data/idx.py: the strict IDX reader, checksums, the search order and its errors, on small synthetic
files; and one test on Debian's real Fashion-MNIST files, skipped where they are not installed."""

import gzip
import hashlib
import os
import pathlib

import numpy as np
import pytest

from research import data
from research.data import idx
from research.errors import ConfigError

BASES = [b for pair in idx.FILES.values() for b in pair]
DEBIAN = pathlib.Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write(path: pathlib.Path, content: bytes, gz: bool = False) -> pathlib.Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def synthetic(directory: pathlib.Path, seed: int = 0, gz=(), sizes=(("train", 6), ("test", 4))) -> dict:
    """Four small IDX files (28x28 images, labels 0..9) in `directory`; returns {base: IDX content bytes}."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    contents = {}
    for split, n in sizes:
        images_base, labels_base = idx.FILES[split]
        contents[images_base] = idx_bytes(rng.integers(0, 256, (n, 28, 28)))
        contents[labels_base] = idx_bytes(rng.integers(0, 10, n))
    for base, content in contents.items():
        write(directory / base, content, gz=base in gz)
    return contents


def table_of(contents: dict, name: str = "fashion_mnist") -> dict:
    return {**idx.SHA256, name: {b: hashlib.sha256(c).hexdigest() for b, c in contents.items()}}


@pytest.fixture
def no_places(tmp_path, monkeypatch):
    """No $RESEARCH_DATA_DIR and an empty stand-in for Debian's directory, whatever this machine has."""
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setitem(idx.DEBIAN_DIRS, "fashion_mnist", str(tmp_path / "debian-absent"))


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# --- the IDX reader ---------------------------------------------------------------------------------------

def test_parse_idx_reads_header_shape_and_values_without_copying():
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    raw = idx_bytes(images)
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == (3).to_bytes(4, "big")  # the helper writes real IDX
    parsed = idx.parse_idx(raw, 3)
    assert parsed.dtype == np.uint8 and parsed.shape == (3, 4, 5)
    np.testing.assert_array_equal(parsed, images)
    assert not parsed.flags.owndata  # a view of the bytes
    labels = idx.parse_idx(idx_bytes(np.array([7, 0, 9], np.uint8)), 1)
    assert labels.shape == (3,) and labels.tolist() == [7, 0, 9]
    # dimensions are big-endian: 256 rows would read as 65536 little-endian and fail the size check
    assert idx.parse_idx(idx_bytes(np.zeros((256, 1, 1))), 3).shape == (256, 1, 1)


def test_gz_and_raw_files_give_the_same_dataset(tmp_path):
    contents = synthetic(tmp_path / "raw")
    synthetic(tmp_path / "gz", gz=BASES)
    table = table_of(contents)
    raw = idx.load_idx_dataset("fashion_mnist", tmp_path / "raw", checksums=table)
    gz = idx.load_idx_dataset("fashion_mnist", tmp_path / "gz", checksums=table)
    assert idx.read_bytes(tmp_path / "gz" / "train-images-idx3-ubyte.gz") == contents["train-images-idx3-ubyte"]
    assert gz.info["files"]["train-images-idx3-ubyte"].endswith(".gz")
    for split, n in (("train", 6), ("test", 4)):
        x, y = raw.split(split)["x"], raw.split(split)["y"]
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32 and y.shape == (n,) and y.dtype == np.int32
        pixels = np.frombuffer(contents[idx.FILES[split][0]], np.uint8, offset=16).reshape(n, 28, 28, 1)
        np.testing.assert_array_equal(x, pixels.astype(np.float32) / 255.0)
        np.testing.assert_array_equal(y, np.frombuffer(contents[idx.FILES[split][1]], np.uint8, offset=8))
        np.testing.assert_array_equal(gz.split(split)["x"], x)
        np.testing.assert_array_equal(gz.split(split)["y"], y)
    assert raw.num_classes == 10 and raw.input_shape == (28, 28, 1) and len(raw.info["class_names"]) == 10


def test_plain_file_is_read_when_both_forms_exist(tmp_path):
    contents = synthetic(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", b"not an IDX file")  # the plain copy is broken, the .gz fine
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(contents["train-labels-idx1-ubyte"]))
    with pytest.raises(ConfigError, match=r"train-labels-idx1-ubyte: bad magic"):
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table_of(contents))


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_is_refused_in_one_line(tmp_path, gz):
    contents = synthetic(tmp_path, gz=BASES if gz else ())
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ConfigError) as e:
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table_of(contents))
    message = one_line_error(e)
    assert message.startswith(str(path) + ": ")
    if gz:
        assert "not a complete gzip file" in message
    else:
        assert "truncated: its header says 6 x 28 x 28 = 4704 bytes of data, the file has 4697" in message


def test_wrong_sizes_for_the_header_are_refused():
    images = idx_bytes(np.zeros((2, 28, 28)))
    with pytest.raises(ConfigError, match=r"^f: 3 bytes too long: its header says 2 x 28 x 28 = 1568 bytes"):
        idx.parse_idx(images + b"abc", 3, "f")
    with pytest.raises(ConfigError, match=r"^f: truncated inside its header \(10 of 16 bytes\)"):
        idx.parse_idx(images[:10], 3, "f")
    with pytest.raises(ConfigError, match=r"^f: truncated: 2 bytes"):
        idx.parse_idx(images[:2], 3, "f")


def test_bad_magic_is_refused(tmp_path):
    contents = synthetic(tmp_path)
    labels = contents["t10k-labels-idx1-ubyte"]
    write(tmp_path / "t10k-images-idx3-ubyte", labels)  # a labels file where the images belong
    with pytest.raises(ConfigError) as e:
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table_of(contents))
    assert one_line_error(e) == (f"{tmp_path / 't10k-images-idx3-ubyte'}: bad magic number 0x00000801, expected "
                                 f"0x00000803 (IDX uint8 3-D); not the right IDX file")
    with pytest.raises(ConfigError, match="bad magic number 0x00000d03"):  # float32 IDX: not uint8
        idx.parse_idx(idx_bytes(np.zeros((1, 1, 4)), magic=0x0D03), 3)
    with pytest.raises(ConfigError, match="bad magic number 0x01000803"):
        idx.parse_idx(idx_bytes(np.zeros((1, 1, 1)), magic=0x01000803), 3)


@pytest.mark.parametrize("gz", [False, True])
def test_checksum_mismatch_is_refused(tmp_path, gz):
    contents = synthetic(tmp_path, gz=BASES if gz else ())
    table = table_of(contents)
    idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table)  # intact: accepted
    images = bytearray(contents["t10k-images-idx3-ubyte"])
    images[-1] ^= 1  # one pixel, same size: only the checksum can tell
    path = write(tmp_path / "t10k-images-idx3-ubyte", bytes(images), gz=gz)
    with pytest.raises(ConfigError) as e:
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table)
    message = one_line_error(e)
    got = hashlib.sha256(bytes(images)).hexdigest()
    want = table["fashion_mnist"]["t10k-images-idx3-ubyte"]
    form = "its decompressed content" if gz else "the file"
    assert message == (f"{path}: checksum mismatch: sha256 of {form} is {got}, fashion_mnist expects {want} "
                       f"(a corrupted or different file)")


def test_checksum_mismatch_names_the_other_dataset(tmp_path):
    contents = synthetic(tmp_path)
    table = {"fashion_mnist": {b: "0" * 64 for b in BASES}, "mnist": table_of(contents)["fashion_mnist"]}
    with pytest.raises(ConfigError, match=r"\(that is mnist's train-images-idx3-ubyte\)"):
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table)


def test_default_table_rejects_synthetic_files(tmp_path):
    synthetic(tmp_path)
    with pytest.raises(ConfigError, match="checksum mismatch"):
        data.load("mnist", data_dir=str(tmp_path))


def test_images_and_labels_must_agree(tmp_path):
    contents = synthetic(tmp_path, sizes=(("train", 6), ("test", 4)))
    contents["t10k-labels-idx1-ubyte"] = idx_bytes(np.zeros(3))
    write(tmp_path / "t10k-labels-idx1-ubyte", contents["t10k-labels-idx1-ubyte"])
    with pytest.raises(ConfigError, match=r"fashion_mnist test: .*t10k-images-idx3-ubyte has 4 images but "
                                          r".*t10k-labels-idx1-ubyte has 3 labels"):
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table_of(contents))
    contents["t10k-labels-idx1-ubyte"] = idx_bytes(np.array([1, 2, 10, 3]))
    write(tmp_path / "t10k-labels-idx1-ubyte", contents["t10k-labels-idx1-ubyte"])
    with pytest.raises(ConfigError, match="label 10 is out of range 0..9"):
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table_of(contents))
    contents["t10k-images-idx3-ubyte"] = idx_bytes(np.zeros((4, 28, 27)))
    write(tmp_path / "t10k-images-idx3-ubyte", contents["t10k-images-idx3-ubyte"])
    with pytest.raises(ConfigError, match="images are 28 x 27, expected 28 x 28"):
        idx.load_idx_dataset("fashion_mnist", tmp_path, checksums=table_of(contents))


# --- where the files are looked for ----------------------------------------------------------------------

def test_missing_fashion_mnist_names_all_three_places_and_the_apt_command(tmp_path, monkeypatch, no_places):
    monkeypatch.setenv(idx.ENV_VAR, str(tmp_path / "root"))
    with pytest.raises(ConfigError) as e:
        data.load("fashion_mnist", data_dir=str(tmp_path / "given"))
    message = one_line_error(e)
    assert message.startswith("dataset 'fashion_mnist' not found: no train-images-idx3-ubyte[.gz], ")
    places = [f"data_dir {tmp_path / 'given'}",
              f"$RESEARCH_DATA_DIR/fashion_mnist/ ({tmp_path / 'root'}/fashion_mnist)",
              str(tmp_path / "debian-absent") + "/"]
    assert "; ".join(places) in message
    assert message.endswith("install them with `apt-get install dataset-fashion-mnist` (as root)")


def test_missing_message_without_options_and_for_mnist(monkeypatch, no_places):
    with pytest.raises(ConfigError) as e:
        data.load("fashion_mnist")
    assert "data_dir (not given); $RESEARCH_DATA_DIR/fashion_mnist/ ($RESEARCH_DATA_DIR not set)" in one_line_error(e)
    with pytest.raises(ConfigError) as e:
        data.load("mnist")
    message = one_line_error(e)
    assert "data_dir (not given); $RESEARCH_DATA_DIR/mnist/ ($RESEARCH_DATA_DIR not set); put the four" in message
    assert "apt-get" not in message and "/usr/share" not in message
    # the real search list: Debian's directory for Fashion-MNIST only
    monkeypatch.undo()
    assert idx.places("fashion_mnist", None)[-1] == ("/usr/share/datasets/fashion-mnist/", DEBIAN)
    assert len(idx.places("mnist", None)) == 2


def test_search_order_data_dir_then_env_then_debian(tmp_path, monkeypatch):
    given, root, debian = tmp_path / "given", tmp_path / "root", tmp_path / "debian"
    monkeypatch.setitem(idx.DEBIAN_DIRS, "fashion_mnist", str(debian))
    monkeypatch.setenv(idx.ENV_VAR, str(root))
    contents = synthetic(given, seed=1)
    synthetic(root / "fashion_mnist", seed=2, gz=BASES)
    synthetic(debian, seed=3, gz=BASES[:2])
    synthetic(root / "mnist", seed=4)

    def source(data_dir=None):
        return pathlib.Path(idx.locate("fashion_mnist", data_dir)["train-images-idx3-ubyte"]).parent

    assert source(given) == given
    assert source() == root / "fashion_mnist"
    monkeypatch.delenv(idx.ENV_VAR)
    assert source() == debian
    assert source(tmp_path / "empty") == debian  # a data_dir without the files is passed over
    # end to end through the registry, which passes data_dir on; the files of the first place are the ones read
    monkeypatch.setitem(idx.SHA256, "fashion_mnist", table_of(contents)["fashion_mnist"])
    loaded = data.load("fashion_mnist", data_dir=str(given), tfds_data_dir="ignored")
    assert loaded.info["source"] == str(given)
    labels = np.frombuffer(contents["train-labels-idx1-ubyte"], np.uint8, offset=8)
    np.testing.assert_array_equal(loaded.split("train")["y"], labels)
    with pytest.raises(ConfigError, match="checksum mismatch"):  # Debian's (seed 3) files: not the pinned ones
        data.load("fashion_mnist")


def test_a_place_with_only_some_files_is_an_error_not_skipped(tmp_path, monkeypatch, no_places):
    synthetic(tmp_path / "given")
    os.remove(tmp_path / "given" / "t10k-labels-idx1-ubyte")
    monkeypatch.setenv(idx.ENV_VAR, str(tmp_path / "root"))
    synthetic(tmp_path / "root" / "fashion_mnist")
    with pytest.raises(ConfigError) as e:
        data.load("fashion_mnist", data_dir=str(tmp_path / "given"))
    assert one_line_error(e) == (f"fashion_mnist: {tmp_path / 'given'} holds only some of its IDX files; missing "
                                 f"t10k-labels-idx1-ubyte[.gz]")


# --- the real files --------------------------------------------------------------------------------------

def _debian_files_present() -> bool:
    return all((DEBIAN / b).is_file() or (DEBIAN / (b + ".gz")).is_file() for b in BASES)


@pytest.mark.skipif(not _debian_files_present(),
                    reason="Debian's dataset-fashion-mnist is not installed in /usr/share/datasets/fashion-mnist "
                           "(bash .ci/fashion_mnist.sh installs it)")
def test_real_fashion_mnist_from_the_debian_package(monkeypatch):
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    ds = data.load("fashion_mnist")
    assert ds.info["source"] == str(DEBIAN) and ds.num_classes == 10
    for split, n in (("train", 60_000), ("test", 10_000)):
        x, y = ds.split(split)["x"], ds.split(split)["y"]
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # the first training image is an ankle boot (class 9), as in Zalando's README samples
    assert int(ds.split("train")["y"][0]) == 9
