"""Image reading: every mode people have, EXIF, truncation, missing files, decompression bombs."""
import io

import numpy as np
import pytest
from PIL import Image

from poseseg.data.image_io import ImageReadError, load_image_rgb, read_image_size, to_rgb_array


def _rgb(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_image_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, arr)


def test_16bit_png_scaled_not_clipped(tmp_path):
    vals = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(vals).save(tmp_path / "deep.png")  # 16-bit greyscale PNG
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # really a high-bit-depth file
    out = load_image_rgb(tmp_path / "deep.png")
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_int32_and_float_modes():
    i_img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32), mode="I")
    assert to_rgb_array(i_img)[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32), mode="I")  # not 16-bit: min..max
    got = to_rgb_array(wide)[0, :, 0].tolist()
    assert got[0] == 0 and got[2] == 255 and abs(got[1] - 127.5) <= 0.5
    f_img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert to_rgb_array(f_img)[0, :, 0].tolist() == [0, 128, 255]
    f_big = Image.fromarray(np.array([[10.0, 20.0, 30.0]], dtype=np.float32), mode="F")
    got = to_rgb_array(f_big)[0, :, 0].tolist()
    assert got[0] == 0 and got[2] == 255 and abs(got[1] - 127.5) <= 0.5


def test_rgba_png_composited_on_white_or_alpha_dropped(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish everywhere
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # transparent
    rgba[0, 2, 3] = 128  # half
    rgba[1, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image_rgb(tmp_path / "a.png")
    assert out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert abs(int(out[0, 2, 1]) - 127) <= 1 and abs(int(out[0, 2, 0]) - 227) <= 1
    dropped = load_image_rgb(tmp_path / "a.png", background=None)
    assert dropped[0, 1].tolist() == [200, 0, 0]


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    out = load_image_rgb(tmp_path / "p.png")
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 255, 0]


def test_grayscale_jpeg(tmp_path):
    g = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    Image.fromarray(g, "L").save(tmp_path / "g.jpg", quality=95)
    out = load_image_rgb(tmp_path / "g.jpg")
    assert out.shape == (16, 32, 3)
    assert (out[..., 0] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - g).max() <= 8


def test_exif_orientation_6_rotates(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # stored landscape, H=20, W=40
    arr[:5, :5] = (255, 0, 0)  # red marker top-left of the stored pixels
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_image_rgb(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)  # H and W swapped
    assert out[:5, -5:, 0].mean() > 200 and out[:5, -5:, 1].mean() < 60  # marker now top-right
    assert out[:5, :5, 0].mean() < 60
    assert read_image_size(tmp_path / "rot.jpg") == (20, 40)
    raw = load_image_rgb(tmp_path / "rot.jpg", exif_transpose=False)
    assert raw.shape == (20, 40, 3)


def test_truncated_jpeg_raises_clear_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        load_image_rgb(path)
    assert isinstance(e.value, ValueError)
    assert "cut.jpg" in str(e.value) and not e.value.missing


def test_not_an_image_and_missing(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(ImageReadError, match="x.jpg"):
        load_image_rgb(tmp_path / "x.jpg")
    with pytest.raises(ImageReadError, match="does not exist") as e:
        load_image_rgb(tmp_path / "nope.jpg")
    assert e.value.missing and e.value.path.endswith("nope.jpg")


def test_decompression_bomb_limit_is_a_parameter(tmp_path, monkeypatch):
    Image.fromarray(_rgb(20, 20)).save(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match="max_image_pixels"):
        load_image_rgb(tmp_path / "a.png", max_pixels=100)
    # a limit above PIL's own global one is honoured (PIL's check lifted for this open only)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    assert load_image_rgb(tmp_path / "a.png", max_pixels=10_000).shape == (20, 20, 3)
    assert load_image_rgb(tmp_path / "a.png", max_pixels=None).shape == (20, 20, 3)
    assert Image.MAX_IMAGE_PIXELS == 50


def test_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(ImageReadError("/a/b.jpg", "bad", missing=True)))
    assert e.path == "/a/b.jpg" and e.reason == "bad" and e.missing


def test_decode_image_bytes_reads_uploads_like_files(tmp_path):
    from poseseg.data.image_io import decode_image_bytes

    rgba = np.dstack([_rgb(), np.full((24, 32), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    np.testing.assert_array_equal(decode_image_bytes(data, "upload.png"), load_image_rgb(tmp_path / "a.png"))
    with pytest.raises(ImageReadError, match="upload.png: empty data"):
        decode_image_bytes(b"", "upload.png")
    with pytest.raises(ImageReadError, match="upload.png: corrupt or truncated"):
        decode_image_bytes(data[: len(data) // 2], "upload.png")
    with pytest.raises(ImageReadError, match="decompression-bomb"):
        decode_image_bytes(data, "upload.png", max_pixels=100)
