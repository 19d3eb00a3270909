"""Dataset loaders: one tidy table per dataset, whatever the folder layout.

Every loader returns a :class:`pandas.DataFrame` with one row per T1-weighted
scan and at least the columns in :data:`COLUMNS`:

``participant_id``
    BIDS-style subject label, always ``sub-<alphanumeric label>``
    (``sub-IXI002``, ``sub-BraTS20Training001``).
``session``
    ``ses-<label>`` or missing (NaN) for single-session datasets.
``path``
    Absolute path of the T1-weighted image.
``age``, ``sex``, ``site``, ``diagnosis``
    Demographics; ``sex`` is ``"M"``/``"F"``; missing values are NaN.
``dataset``
    Which dataset the row comes from (``"IXI"``, ``"BraTS"``, or the BIDS
    dataset name), so tables can be concatenated.
``scan_id``
    Unique BIDS entity prefix of the scan (``sub-01_ses-1``), used to name
    derivatives.

Loaders read only; they never write into the dataset folder. Layout problems
(no scans, unreadable sheets, duplicate files) raise a specific error naming
the file or folder; subjects without demographics keep NaN values and are
reported in one warning.
"""

from __future__ import annotations

import json
import re
import warnings
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "DatasetError", "load_bids", "load_brats", "load_dataset", "load_ixi"]

#: Columns every dataset table has, in this order (extra columns follow).
COLUMNS = [
    "participant_id",
    "session",
    "path",
    "age",
    "sex",
    "site",
    "diagnosis",
    "dataset",
    "scan_id",
]

_NIFTI = re.compile(r"\.nii(\.gz)?$")
_SEX = {
    "m": "M", "male": "M", "man": "M", "1": "M",
    "f": "F", "female": "F", "woman": "F", "2": "F",
}  # fmt: skip


class DatasetError(ValueError):
    """A dataset folder or sheet does not have the expected layout."""


# --------------------------------------------------------------------------- helpers
def _root(root: str | PathLike) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset path is not a folder: {root}")
    return root.resolve()


def _label(text: str) -> str:
    """Alphanumeric BIDS label from any identifier (``BraTS20_Training_001`` -> ``BraTS20Training001``)."""
    label = re.sub(r"[^0-9A-Za-z]", "", str(text))
    if not label:
        raise DatasetError(f"cannot make a BIDS label from identifier {text!r}")
    return label


def _normalise_sex(values: pd.Series, source: Path) -> pd.Series:
    def one(value: object) -> object:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return np.nan
        text = str(value).strip().lower()
        if text.endswith(".0"):
            text = text[:-2]
        return _SEX.get(text, "?" if text not in ("", "n/a", "nan") else np.nan)

    out = values.map(one)
    bad = sorted({str(v) for v, o in zip(values, out, strict=True) if o == "?"})
    if bad:
        warnings.warn(f"{source}: unrecognised sex values {bad} set to NaN", stacklevel=3)
        out = out.where(out != "?", np.nan)
    return out.astype(object)


def _finalise(rows: list[dict], extra: pd.DataFrame | None, dataset: str) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    if extra is not None and len(extra):
        table = table.merge(extra, on="participant_id", how="left", suffixes=("", "_sheet"))
    for col in COLUMNS:
        if col not in table:
            table[col] = np.nan
    table["dataset"] = dataset
    table["age"] = pd.to_numeric(table["age"], errors="coerce").astype(float)
    table = table[COLUMNS + [c for c in table.columns if c not in COLUMNS]]
    table = table.sort_values(["participant_id", "scan_id"], kind="stable").reset_index(drop=True)
    dup = table["scan_id"][table["scan_id"].duplicated()]
    if len(dup):
        raise DatasetError(f"duplicate scans for {sorted(set(dup))} in dataset {dataset}")
    return table


def _warn_missing(ids: list[str], source: Path | str, what: str = "demographics") -> None:
    if ids:
        shown = ", ".join(ids[:10]) + (f" ... (+{len(ids) - 10} more)" if len(ids) > 10 else "")
        warnings.warn(
            f"{len(ids)} subject(s) have no {what} in {source}; their values are NaN: {shown}",
            stacklevel=3,
        )


# --------------------------------------------------------------------------- BIDS
def _read_participants(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(
            path, sep="\t", dtype=str, na_values=["n/a", "NA", ""], keep_default_na=False
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"{path}: cannot read participants table ({err})") from err
    table.columns = [str(c).strip() for c in table.columns]
    if "participant_id" not in table:
        raise DatasetError(f"{path}: no 'participant_id' column (columns: {list(table.columns)})")
    table["participant_id"] = [
        v if str(v).startswith("sub-") else f"sub-{v}"
        for v in table["participant_id"].astype(str).str.strip()
    ]
    dup = table["participant_id"][table["participant_id"].duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: participant_id repeated: {sorted(set(dup))}")
    if "sex" in table:
        table["sex"] = _normalise_sex(table["sex"], path)
    if "age" in table:
        table["age"] = pd.to_numeric(table["age"], errors="coerce")
    # extra columns: numeric where every value parses
    for col in table.columns:
        if col in ("participant_id", "sex", "age", "session"):
            continue
        numeric = pd.to_numeric(table[col], errors="coerce")
        if numeric.notna().sum() == table[col].notna().sum() and table[col].notna().any():
            table[col] = numeric
    return table.drop(columns=[c for c in ("path", "dataset", "scan_id", "session") if c in table])


def _dataset_name(root: Path) -> str:
    desc = root / "dataset_description.json"
    if desc.is_file():
        try:
            name = json.loads(desc.read_text(encoding="utf-8")).get("Name")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            raise DatasetError(f"{desc}: not valid JSON ({err})") from err
        if name:
            return str(name)
    return root.name


def load_bids(root: str | PathLike, suffix: str = "T1w") -> pd.DataFrame:
    """Table of the T1-weighted scans of a BIDS dataset.

    Parameters
    ----------
    root : path-like
        BIDS root holding ``participants.tsv`` and ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``.
    suffix : str
        BIDS suffix of the images to list.

    Returns
    -------
    pandas.DataFrame
        One row per image with :data:`COLUMNS`, then every other column of
        ``participants.tsv`` and the BIDS entities ``acq``/``run`` when present.
        ``dataset`` is the ``Name`` in ``dataset_description.json`` (or the
        folder name).

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.
    DatasetError
        No matching scans, an unreadable ``participants.tsv``, or duplicate scans.

    Warns
    -----
    UserWarning
        When ``participants.tsv`` is missing, or lists no row for some scanned
        subjects (their demographics are NaN).
    """
    root = _root(root)
    pattern = re.compile(
        rf"^(sub-[0-9A-Za-z]+)((?:_[a-z]+-[0-9A-Za-z]+)*)_{re.escape(suffix)}\.nii(\.gz)?$"
    )
    rows = []
    for sub_dir in sorted(root.glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        for path in sorted(sub_dir.glob(f"*/anat/*_{suffix}.nii*")) + sorted(
            sub_dir.glob(f"anat/*_{suffix}.nii*")
        ):
            match = pattern.match(path.name)
            if not match or match.group(1) != sub_dir.name:
                warnings.warn(f"skipping file with a non-BIDS name: {path}", stacklevel=2)
                continue
            entities = dict(e.split("-", 1) for e in match.group(2).split("_") if e)
            session = f"ses-{entities['ses']}" if "ses" in entities else np.nan
            if "ses" in entities and path.parent.parent.name != session:
                raise DatasetError(
                    f"{path}: session entity does not match folder {path.parent.parent.name}"
                )
            row = {
                "participant_id": match.group(1),
                "session": session,
                "path": str(path),
                "scan_id": match.group(1) + match.group(2),
            }
            row.update({k: v for k, v in entities.items() if k in ("acq", "run")})
            rows.append(row)
    if not rows:
        raise DatasetError(f"no sub-*/[ses-*/]anat/*_{suffix}.nii[.gz] images found under {root}")

    participants_path = root / "participants.tsv"
    if participants_path.is_file():
        participants = _read_participants(participants_path)
        known = set(participants["participant_id"])
        _warn_missing(sorted({r["participant_id"] for r in rows} - known), participants_path)
    else:
        warnings.warn(f"{participants_path} not found; demographics are NaN", stacklevel=2)
        participants = None
    return _finalise(rows, participants, _dataset_name(root))


# --------------------------------------------------------------------------- IXI
_IXI_FILE = re.compile(r"^IXI(\d{3})-([A-Za-z]+)-(\d+)-T1\.nii(\.gz)?$")
_IXI_SHEETS = ("IXI.xls", "IXI.xlsx", "IXI.csv", "IXI.tsv")


def _find_ixi_sheet(root: Path) -> Path | None:
    for folder in (root, root.parent):
        for name in _IXI_SHEETS:
            if (folder / name).is_file():
                return folder / name
    return None


def _read_ixi_sheet(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IXI demographics sheet not found: {path}")
    try:
        if path.suffix.lower() in (".xls", ".xlsx"):
            sheet = pd.read_excel(path)
        else:
            sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else None  # sniff , or ;
            sheet = pd.read_csv(path, sep=sep, engine="python")
    except Exception as err:  # xlrd/openpyxl/csv raise many types
        raise DatasetError(
            f"{path}: cannot read IXI demographics sheet ({type(err).__name__}: {err})"
        ) from err
    sheet.columns = [str(c).strip() for c in sheet.columns]
    upper = {c.upper(): c for c in sheet.columns}
    id_col = upper.get("IXI_ID")
    sex_col = next((c for c in sheet.columns if c.upper().startswith("SEX")), None)
    age_col = upper.get("AGE")
    missing = [
        n for n, c in (("IXI_ID", id_col), ("SEX_ID", sex_col), ("AGE", age_col)) if c is None
    ]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing} (columns: {list(sheet.columns)})")
    ids = pd.to_numeric(sheet[id_col], errors="coerce")
    sheet = sheet[ids.notna()].copy()
    sheet["participant_id"] = [f"sub-IXI{int(i):03d}" for i in ids[ids.notna()]]
    sheet["age"] = pd.to_numeric(sheet[age_col], errors="coerce")
    sheet["sex"] = _normalise_sex(sheet[sex_col], path)
    # The real sheet repeats some IDs; keep the row with an age when there is one.
    sheet = sheet.sort_values("age", na_position="last", kind="stable")
    sheet = sheet.drop_duplicates("participant_id", keep="first")
    keep = {
        c: c.lower()
        for c in sheet.columns
        if c not in (id_col, sex_col, age_col, "participant_id", "age", "sex")
    }
    keep = {c: re.sub(r"[^0-9a-z]+", "_", n).strip("_") for c, n in keep.items()}
    return sheet[["participant_id", "age", "sex", *keep]].rename(columns=keep)


def load_ixi(root: str | PathLike, demographics: str | PathLike | None = None) -> pd.DataFrame:
    """Table of the IXI T1 scans in a folder, with the demographics sheet.

    Parameters
    ----------
    root : path-like
        Folder of ``IXI<ID>-<Site>-<num>-T1.nii.gz`` files (the ``IXI-T1``
        download, unpacked). Other modalities in the folder are ignored.
    demographics : path-like, optional
        ``IXI.xls`` (as distributed) or a CSV/TSV export of it, with columns
        ``IXI_ID``, ``SEX_ID (1=m, 2=f)`` and ``AGE``. By default ``IXI.xls``
        (or ``.xlsx``/``.csv``/``.tsv``) is looked for in ``root`` and its
        parent folder.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS` plus ``ixi_id`` and the sheet's other columns in
        lower case. ``site`` is parsed from the file name (Guys, HH, IOP);
        ``diagnosis`` is ``"CN"`` (IXI subjects are healthy volunteers).

    Warns
    -----
    UserWarning
        Once, listing scanned subjects absent from the sheet (their age and sex
        are NaN), or when no sheet is found.
    """
    root = _root(root)
    rows = []
    skipped = []
    for path in sorted(root.glob("IXI*-T1.nii*")):
        match = _IXI_FILE.match(path.name)
        if not match:
            skipped.append(path.name)
            continue
        num, site = int(match.group(1)), match.group(2)
        pid = f"sub-IXI{num:03d}"
        rows.append(
            {"participant_id": pid, "session": np.nan, "path": str(path), "site": site,
             "diagnosis": "CN", "scan_id": pid, "ixi_id": num}
        )  # fmt: skip
    if skipped:
        warnings.warn(
            f"{root}: skipped files not named IXI<ID>-<Site>-<num>-T1.nii.gz: {skipped}",
            stacklevel=2,
        )
    if not rows:
        raise DatasetError(f"no IXI<ID>-<Site>-<num>-T1.nii[.gz] files found in {root}")

    sheet_path = Path(demographics) if demographics is not None else _find_ixi_sheet(root)
    if sheet_path is None:
        warnings.warn(
            f"no IXI demographics sheet ({'/'.join(_IXI_SHEETS)}) in {root} or its parent; "
            "age and sex are NaN (pass demographics=...)",
            stacklevel=2,
        )
        sheet = None
    else:
        sheet = _read_ixi_sheet(sheet_path)
        _warn_missing(
            sorted({r["participant_id"] for r in rows} - set(sheet["participant_id"])), sheet_path
        )
        sheet = sheet.drop(columns=[c for c in ("site", "diagnosis", "session") if c in sheet])
    return _finalise(rows, sheet, "IXI")


# --------------------------------------------------------------------------- BraTS
#: Modality suffixes of BraTS 2018-2021 and their BraTS 2023 equivalents.
_BRATS_MODALITIES = {
    "t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg",
    "t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair",
}  # fmt: skip
_BRATS_FILE = re.compile(
    r"^(.+?)[_-](t1|t1ce|t2|flair|seg|t1n|t1c|t2w|t2f)\.nii(\.gz)?$", re.IGNORECASE
)


def _read_brats_clinical(root: Path) -> pd.DataFrame | None:
    """Age (and survival) from ``survival_info.csv`` when the release ships it."""
    for name in ("survival_info.csv", "survival_data.csv"):
        path = root / name
        if path.is_file():
            try:
                table = pd.read_csv(path)
            except Exception as err:
                raise DatasetError(f"{path}: cannot read ({type(err).__name__}: {err})") from err
            id_col = next((c for c in table.columns if "id" in c.lower()), None)
            if id_col is None or "Age" not in table:
                raise DatasetError(
                    f"{path}: expected an ID column and 'Age' (columns: {list(table.columns)})"
                )
            out = pd.DataFrame(
                {
                    "participant_id": [f"sub-{_label(v)}" for v in table[id_col]],
                    "age": pd.to_numeric(table["Age"], errors="coerce"),
                }
            )
            extra = [c for c in table.columns if c not in (id_col, "Age")]
            for col in extra:
                out[re.sub(r"[^0-9a-z]+", "_", col.lower()).strip("_")] = table[col].to_numpy()
            return out.drop_duplicates("participant_id")
    return None


def load_brats(root: str | PathLike) -> pd.DataFrame:
    """Table of the cases of a BraTS release folder.

    Parameters
    ----------
    root : path-like
        Folder of case folders, each holding ``<case>_t1``, ``_t1ce``, ``_t2``,
        ``_flair`` and (training data) ``_seg`` NIfTI files. BraTS 2023 names
        (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``) are understood too.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS` (``path`` is the native T1, ``diagnosis`` is
        ``"glioma"``) plus ``case``, ``t1ce_path``, ``t2_path``,
        ``flair_path`` and ``seg_path`` (the ground-truth tumour label map,
        NaN for cases without one). Age comes from ``survival_info.csv`` when
        present.

    Raises
    ------
    DatasetError
        No case folders, or a case folder with two files for one modality.

    Warns
    -----
    UserWarning
        Case folders without a T1 image are skipped, listed in one warning.
    """
    root = _root(root)
    rows = []
    no_t1 = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files: dict[str, Path] = {}
        for path in sorted(case_dir.iterdir()):
            match = _BRATS_FILE.match(path.name)
            if not match:
                continue
            modality = _BRATS_MODALITIES[match.group(2).lower()]
            if modality in files:
                raise DatasetError(
                    f"{case_dir}: two {modality} images ({files[modality].name}, {path.name})"
                )
            files[modality] = path
        if not files:
            continue
        if "t1" not in files:
            no_t1.append(case_dir.name)
            continue
        pid = f"sub-{_label(case_dir.name)}"
        row = {"participant_id": pid, "session": np.nan, "path": str(files["t1"]), "diagnosis": "glioma",
               "scan_id": pid, "case": case_dir.name}  # fmt: skip
        for modality in ("t1ce", "t2", "flair", "seg"):
            row[f"{modality}_path"] = str(files[modality]) if modality in files else np.nan
        rows.append(row)
    if no_t1:
        warnings.warn(
            f"{root}: skipped {len(no_t1)} case folder(s) without a T1 image: {no_t1}", stacklevel=2
        )
    if not rows:
        raise DatasetError(f"no BraTS case folders (<case>/<case>_t1.nii.gz, ...) found in {root}")
    clinical = _read_brats_clinical(root)
    return _finalise(rows, clinical, "BraTS")


def load_dataset(root: str | PathLike, kind: str) -> pd.DataFrame:
    """Dispatch to :func:`load_bids`, :func:`load_ixi` or :func:`load_brats` by ``kind``."""
    loaders = {"bids": load_bids, "ixi": load_ixi, "brats": load_brats}
    if kind not in loaders:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(loaders)}")
    return loaders[kind](root)
