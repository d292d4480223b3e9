#!/usr/bin/env python3
"""Regenerates seeds/<target>/ from the fixtures in shared/fixtures (run from tests/fuzz).

AFL++ refuses inputs over 1 MB and runs slowly on big ones, so checkpoints are shrunk: a `.pt`
keeps its `data.pkl`, its small records and every storage of at most 4 KiB (the larger storages
are dropped, so reading those tensors takes the "cannot open" error path); a `.safetensors` keeps
its tensors of at most 1 KiB. Checkpoint-route seeds start with byte 0x01 (file) and pickle-route
seeds with 0x00 (raw `data.pkl`), as the `checkpoint` target expects.
"""
import glob, io, json, os, shutil, struct, sys, zipfile

FIX = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fixtures"
OUT = "seeds"
STORAGE_MAX = 4096
SAFETENSORS_TENSOR_MAX = 1024


def put(target, name, data):
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data)


def shrink_pt(path):
    src = zipfile.ZipFile(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if "/data/" in info.filename and info.file_size > STORAGE_MAX:
                continue
            dst.writestr(info.filename, src.read(info.filename))
    pkl = next(n for n in src.namelist() if n.endswith("data.pkl"))
    return buf.getvalue(), src.read(pkl)


def shrink_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    new_header, blob = {}, b""
    for key, info in header.items():
        if key == "__metadata__":
            new_header[key] = info
            continue
        b, e = info["data_offsets"]
        if e - b > SAFETENSORS_TENSOR_MAX or len(new_header) >= 24:
            continue
        new_header[key] = dict(info, data_offsets=[len(blob), len(blob) + e - b])
        blob += data[b:e]
    h = json.dumps(new_header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + blob


def main():
    for t in ("checkpoint", "image", "metadata"):
        shutil.rmtree(f"{OUT}/{t}", ignore_errors=True)
    pts = sorted(
        glob.glob(f"{FIX}/field/*.pt")
        + glob.glob(f"{FIX}/reference/tiny/*.pt")
        + glob.glob(f"{FIX}/reference/tiny/layouts/*.pt")
    )
    for p in pts:
        stem = os.path.basename(p)[: -len(".pt")]
        try:
            small, pkl = shrink_pt(p)
        except zipfile.BadZipFile:
            # Not a zip (a truncated download, a non-checkpoint): keep its first 4 KiB as is.
            put("checkpoint", f"file_{stem}.pt", b"\x01" + open(p, "rb").read()[:4096])
            continue
        if len(pkl) > 64 << 10:
            continue  # the 18 MB training checkpoint: its pickle alone is too big a seed
        put("checkpoint", f"file_{stem}.pt", b"\x01" + small)
        put("checkpoint", f"pickle_{stem}.pkl", b"\x00" + pkl)
    for p in sorted(glob.glob(f"{FIX}/reference/tiny/*.safetensors")):
        stem = os.path.basename(p)[: -len(".safetensors")]
        put("checkpoint", f"file_{stem}.safetensors", b"\x01" + shrink_safetensors(p))

    for p in sorted(glob.glob(f"{FIX}/field/*.png") + glob.glob(f"{FIX}/field/*.jpg")):
        name = os.path.basename(p)
        # Skip the two slow ones: the 1000x700 photo and the file declaring 12000x12000 pixels.
        if "1000x700" in name or "12000x12000" in name:
            continue
        put("image", name, open(p, "rb").read())
        if name.startswith("metadata_"):
            put("metadata", name, open(p, "rb").read())


if __name__ == "__main__":
    main()
