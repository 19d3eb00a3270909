"""One synthetic subject: draw its parameters, then render it in MNI or native space."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from nbutils import anatomy

from .base import STRUCTURES, BaseAnatomy, base_anatomy, head_grid, measure_base
from .fields import (
    FIELD_STEP_JAC,
    Deformation,
    RandomWarp,
    apply,
    grid_points,
    invert,
    soft_label_volumes,
)
from .scanner import SITES, Site, add_rician_noise, bias_field, contrast_curve, partial_volume_blur
from .tumours import TUMOUR_CLASSES, Tumour, draw_tumour

__all__ = ["DIAGNOSES", "Rendered", "SubjectSpec", "draw_subject", "render_subject", "solve_deformation"]

DIAGNOSES = ("CN", "MCI", "AD", *TUMOUR_CLASSES)
AGE_RANGE = (20.0, 86.0)
#: Template (MNI152 2009, young adults) taken as age 25.
TEMPLATE_AGE = 25.0

# Disease and ageing parameters. Fixed from the literature before any model was run on the
# cohort (generator version 2); see data/README.md, "What is simulated", for the rationale.

#: ``atrophy_severity`` = hippocampal volume loss vs. the same subject without disease, i.e. vs.
#: age-matched controls: (mean, sd, low, high) of a clipped normal. AD ≈ 22 % (meta-analysis of
#: Shi et al. 2009, Hippocampus 19:1055: AD ≈ 24 %, MCI ≈ 13 % smaller than controls; ADNI
#: FreeSurfer studies 20–25 %); MCI ≈ 12 %.
SEVERITY = {"AD": (0.22, 0.06, 0.08, 0.40), "MCI": (0.12, 0.05, 0.03, 0.25)}
#: Disease shrink of each structure relative to the hippocampal severity: amygdala loss is close
#: to the hippocampal one (Poulin et al. 2011), entorhinal cortex loses most (Juottonen et al. 1998,
#: Du et al. 2001), the parahippocampal gyrus less.
DISEASE_WEIGHT = {"hippocampus": 1.0, "amygdala": 0.9, "entorhinal": 1.1, "parahippocampal": 0.6}
#: Healthy medial temporal shrink per year: (rate after 45, extra rate after 60). Hippocampal
#: decline is slow in mid-life and accelerates after 60 to ≈ 0.7–0.9 %/year (Raz et al. 2005,
#: Fjell et al. 2009/2013); amygdala and parahippocampal/entorhinal cortex decline less.
AGEING_MTL_RATE = {
    "hippocampus": (0.002, 0.004), "amygdala": (0.0015, 0.003),
    "entorhinal": (0.001, 0.003), "parahippocampal": (0.001, 0.003),
}
#: Lateral+third ventricle growth with age, ×exp(rate·(age − 25)): ≈ ×2.3 at 75, ×2.8 at 85
#: (ventricles are the largest age effect in cross-sectional MRI; Walhovd et al. 2005/2011,
#: Fjell et al. 2009), times a log-normal individual factor (sd 0.18).
VENTRICLE_AGE_RATE = 0.017
#: Extra ventricular enlargement per unit severity: AD (0.22) ≈ +33 % vs. age-matched controls,
#: MCI ≈ +18 % (ADNI: AD lateral ventricles ≈ 30–50 % larger, Nestor et al. 2008).
VENTRICLE_DISEASE_GAIN = 1.5
#: Cortical thinning (fraction of cortical GM turned into sulcal CSF) between 25 and 85 years
#: where :data:`~nbutils.synth.base.AGEING_CORTEX_WEIGHT` is 1 (prefrontal ≈ 0.4–0.5 mm of
#: ≈ 2.5 mm, Salat et al. 2004), times an individual factor (log-normal sd 0.2).
AGEING_THINNING = 0.20
#: Disease thinning per unit severity where :data:`~nbutils.synth.base.AD_CORTEX_WEIGHT` is 1:
#: AD (0.22) ≈ 10 %, MCI (0.12) ≈ 5 % of the ribbon in the AD signature (Dickerson et al. 2009:
#: AD ≈ 0.2–0.3 mm thinner there, prodromal AD about half of that).
AD_THINNING_PER_SEVERITY = 0.45
#: Structures whose lost volume becomes CSF (temporal horn, choroidal fissure, hippocampal sulcus).
CSF_FROM = ("hippocampus", "amygdala")
#: Fraction of that lost volume replaced by CSF. The intracranial volume does not shrink, so lost
#: tissue is replaced by CSF; the medial temporal loss is taken up locally by the temporal horn of the
#: lateral ventricle (its enlargement is among the largest AD effects on MRI, Nestor et al. 2008).
MTL_CSF_FILL = 1.0
#: Tolerance of the volume solve (relative).
SOLVE_TOL = 0.004
#: Most flow steps a structure field may take. 16 steps reach the largest ventricular requests
#: (×5 at 86 with a +2 sd individual factor and severe AD); the solve still reports what it achieved.
MAX_FLOW_STEPS = 16
#: Search margin (mm) around the medial temporal structures for points whose tissue was lost.
_MTL_MARGIN_MM = 8.0


@dataclass
class SubjectSpec:
    """Everything random about one subject (drawn by :func:`draw_subject`).

    ``severity`` is the requested disease shrink of the hippocampus (fraction
    of its volume, relative to the same subject without disease); the other
    medial temporal structures shrink by :data:`DISEASE_WEIGHT` times it.
    """

    index: int
    participant_id: str
    diagnosis: str
    age: float
    sex: str
    site: str
    severity: float
    hemi_jitter: dict[str, float]
    ventricle_jitter: float
    thinning_jitter: float
    warp_rms_mm: float
    head_scale: np.ndarray
    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    skull_scale: float
    snr: float
    bias_strength: float
    tissue_jitter: np.ndarray
    tumour: Tumour | None
    seeds: dict[str, int] = field(default_factory=dict)

    def rng(self, what: str) -> np.random.Generator:
        return np.random.default_rng(self.seeds[what])


def _age(diagnosis: str, rng: np.random.Generator) -> float:
    lo, hi = AGE_RANGE
    if diagnosis == "CN":
        return float(rng.uniform(lo, hi))
    mean, sd, low = {
        "MCI": (71, 7, 55), "AD": (74, 7, 55), "glioma": (55, 14, lo),
        "meningioma": (58, 12, 25), "pituitary": (45, 14, lo),
    }[diagnosis]
    return float(np.clip(rng.normal(mean, sd), low, hi))


def draw_subject(index: int, diagnosis: str, seed: int) -> SubjectSpec:
    """Draw subject ``index`` of a cohort with ``seed`` (independent of everything else).

    Each aspect (demographics, anatomy, tumour, scanner, noise) gets its own
    generator seeded from ``(seed, index, aspect)``, so a subject is the same
    whatever the cohort size, the number of jobs or the output space.
    """
    if diagnosis not in DIAGNOSES:
        raise ValueError(f"unknown diagnosis {diagnosis!r}; choose one of {', '.join(DIAGNOSES)}")
    seeds = {k: int(np.random.SeedSequence([seed, index, i]).generate_state(1)[0]) for i, k in enumerate(
        ("demo", "anat", "tumour", "scan", "noise", "warp"))}
    r = np.random.default_rng(seeds["demo"])
    p_female = {"AD": 0.6, "meningioma": 0.67, "MCI": 0.5}.get(diagnosis, 0.52)
    sex = "F" if r.uniform() < p_female else "M"
    age = _age(diagnosis, r)
    site = str(r.choice(sorted(SITES)))
    a = np.random.default_rng(seeds["anat"])
    severity = 0.0
    if diagnosis in SEVERITY:
        mean, sd, lo, hi = SEVERITY[diagnosis]
        severity = float(np.clip(a.normal(mean, sd), lo, hi))
    hemi = {f"{s}_{h}": float(np.exp(a.normal(0, 0.08))) for s in DISEASE_WEIGHT for h in "LR"}
    size = (1.025 if sex == "M" else 0.975) * float(np.exp(a.normal(0, 0.03)))
    head_scale = size * np.exp(a.normal(0, 0.02, 3))
    s = np.random.default_rng(seeds["scan"])
    tumour = draw_tumour(diagnosis, np.random.default_rng(seeds["tumour"])) if diagnosis in TUMOUR_CLASSES else None
    rot = s.uniform(-1, 1, 3)
    rot *= s.uniform(0, 15) / max(np.abs(rot).max(), 1e-9)
    return SubjectSpec(
        index=index, participant_id=f"sub-{index + 1:04d}", diagnosis=diagnosis, age=round(age, 1), sex=sex,
        site=site, severity=severity, hemi_jitter=hemi, ventricle_jitter=float(np.exp(a.normal(0, 0.18))),
        thinning_jitter=float(np.exp(a.normal(0, 0.2))), warp_rms_mm=float(a.uniform(1.5, 3.0)),
        head_scale=head_scale, rotation_deg=rot, translation_mm=s.uniform(-30, 30, 3),
        skull_scale=float(s.uniform(0.85, 1.2)), snr=float(np.exp(s.uniform(np.log(12), np.log(40)))),
        bias_strength=float(s.uniform(0.05, 0.2)), tissue_jitter=np.exp(s.normal(0, 0.03, 3)),
        tumour=tumour, seeds=seeds,
    )


# --------------------------------------------------------------------------- volumes


def target_ratios(spec: SubjectSpec) -> dict[str, float]:
    """Requested volume ratio of each controlled structure vs. the subject's young, healthy anatomy."""
    out = {}
    for name in STRUCTURES:
        if name == "ventricles":
            continue
        kind, hemi = name.rsplit("_", 1)
        mid, late = AGEING_MTL_RATE[kind]
        ageing = 1.0 - mid * max(spec.age - 45.0, 0.0) - late * max(spec.age - 60.0, 0.0)
        disease = 1.0 - min(DISEASE_WEIGHT[kind] * spec.severity * spec.hemi_jitter[name], 0.6)
        out[name] = ageing * disease
    ageing = float(np.exp(VENTRICLE_AGE_RATE * (spec.age - TEMPLATE_AGE)))
    out["ventricles"] = ageing * spec.ventricle_jitter * (1.0 + VENTRICLE_DISEASE_GAIN * spec.severity)
    return out


@lru_cache(maxsize=1)
def _solve_points() -> tuple[np.ndarray, float]:
    """2 mm points that can carry a controlled structure (within 14 mm of one)."""
    mb = measure_base()
    ids = [i for v in mb.structure_labels.values() for i in v]
    near = ndi.distance_transform_edt(~np.isin(mb.labels, ids), sampling=mb.grid.resolution) <= 14.0
    return mb.grid.world_coords(np.argwhere(near).astype(float)), mb.grid.voxel_volume


@lru_cache(maxsize=1)
def _sensitivity() -> dict[str, float]:
    """Relative volume change per unit amplitude of each structure field, on the template."""
    fields = measure_base().fields
    v0 = _group_volumes(Deformation())
    step = {n: (-0.2 if n == "ventricles" else 0.2) * FIELD_STEP_JAC / f.max_jac for n, f in fields.items()}
    v1 = _group_volumes(Deformation(amplitudes=step))
    return {n: (v1[n] / v0[n] - 1.0) / step[n] for n in fields}


def _group_volumes(deformation: Deformation) -> dict[str, float]:
    pts, cell = _solve_points()
    vol = soft_label_volumes(deformation.structural(pts), cell)
    return {n: float(vol[list(ids)].sum()) for n, ids in measure_base().structure_labels.items()}


def solve_deformation(spec: SubjectSpec, n_iter: int = 8) -> tuple[Deformation, dict[str, dict[str, float]]]:
    """The subject's deformation, with structure amplitudes solved so volumes match the request.

    Returns
    -------
    deformation : Deformation
    report : dict
        Per structure: ``baseline_mm3`` (random warp only), ``target_ratio``,
        ``achieved_ratio``, ``amplitude``.
    """
    warp = RandomWarp.draw(spec.rng("warp"), spec.warp_rms_mm)
    deformation = Deformation(warp=warp)
    fields = measure_base().fields
    v0 = _group_volumes(deformation)
    ratios = target_ratios(spec)
    target = {n: v0[n] * ratios[n] for n in fields}
    cap = {n: MAX_FLOW_STEPS * FIELD_STEP_JAC / f.max_jac for n, f in fields.items()}
    tol = {n: 0.02 if n == "ventricles" else SOLVE_TOL for n in fields}
    k = _sensitivity()
    a_prev, v_prev = dict.fromkeys(fields, 0.0), v0
    amps = {n: float(np.clip((ratios[n] - 1.0) / k[n], -cap[n], cap[n])) for n in fields}
    v = None
    for _ in range(n_iter):
        deformation.amplitudes = dict(amps)
        v = _group_volumes(deformation)
        done = {
            n: abs(v[n] / target[n] - 1.0) < tol[n] or (abs(amps[n]) >= cap[n] - 1e-9 and (v[n] - target[n]) * amps[n] < 0)
            for n in fields
        }
        if all(done.values()):
            break  # v is the volume of the final amplitudes: no need to measure again
        new = {}
        for n in fields:
            dv, da = v[n] - v_prev[n], amps[n] - a_prev[n]
            slope = dv / da if abs(da) > 1e-9 and dv / da < 0 else k[n] * v[n]
            new[n] = amps[n] if done[n] else float(np.clip(amps[n] + (target[n] - v[n]) / slope, -cap[n], cap[n]))
        a_prev, v_prev, amps = amps, v, new
        v = None
    deformation.amplitudes = dict(amps)
    if v is None:
        v = _group_volumes(deformation)
    report = {
        n: {"baseline_mm3": v0[n], "target_ratio": ratios[n], "achieved_ratio": v[n] / v0[n], "amplitude": amps[n]}
        for n in fields
    }
    if spec.tumour is not None:
        deformation.mass = spec.tumour.mass_effect()
    return deformation, report


# --------------------------------------------------------------------------- intensities


def _tissue_intensity(base: BaseAnatomy, spec: SubjectSpec, site: Site, head: bool) -> np.ndarray:
    """Subject's T1 (before contrast curve) in template space, with age/disease cortical thinning."""
    loss = base.gm * cortical_loss(base, spec)
    mu_c, mu_g, mu_w = np.array([site.csf, site.gm, site.wm]) * spec.tissue_jitter
    img = mu_c * (base.csf + loss) + mu_g * (base.gm - loss) + mu_w * base.wm
    img += 0.6 * (mu_w - mu_c) * base.texture
    img *= base.mask
    if head:
        d = base.outside_mm / spec.skull_scale
        layers = [(1.5, mu_c), (3.0, 0.04), (6.0, 0.5), (7.5, 0.04), (11.0, site.fat), (14.0, 0.45)]
        out = np.zeros_like(d)
        for edge, value in reversed(layers):
            out[d < edge] = value
        world = base.grid.world_coords(np.zeros(3))
        z = world[2] + np.arange(base.grid.shape[2]) * base.grid.resolution
        y = world[1] + np.arange(base.grid.shape[1]) * base.grid.resolution
        x = world[0] + np.arange(base.grid.shape[0]) * base.grid.resolution
        ell = (x[:, None, None] / 52.0) ** 2 + ((y[None, :, None] + 18.0) / 58.0) ** 2 + 0 * z[None, None, :]
        neck = (z[None, None, :] < -40) & (ell < 1.0)
        out = np.where(neck & (out == 0), np.where(ell > 0.8, site.fat, 0.45), out)
        img = np.where(base.mask > 0, img, out)
    return img.astype(np.float32)


def cortical_loss(base: BaseAnatomy, spec: SubjectSpec) -> np.ndarray:
    """Fraction of each voxel's GM turned into CSF: ageing pattern plus AD-signature pattern."""
    age = AGEING_THINNING * np.clip((spec.age - TEMPLATE_AGE) / 60.0, 0, 1.2) * spec.thinning_jitter
    disease = AD_THINNING_PER_SEVERITY * spec.severity
    return np.clip(age * base.cortex_ageing + disease * base.cortex_ad, 0, 0.8)


@dataclass(frozen=True)
class _MTLMaps:
    """2 mm indicators for the tissue-to-CSF replacement (see :func:`mtl_csf`)."""

    source: np.ndarray  # hippocampus + amygdala (lost volume becomes CSF)
    protected: np.ndarray  # every solved structure (their volumes stay exactly as solved)
    protected_ids: np.ndarray
    horn: dict[str, int]  # Inf_Lat_Vent label per hemisphere
    near: np.ndarray  # source dilated by _MTL_MARGIN_MM (where lost tissue can be)
    lo: np.ndarray
    hi: np.ndarray


@lru_cache(maxsize=1)
def _mtl_maps() -> _MTLMaps:
    mb = measure_base()
    src = [i for n, ids in mb.structure_labels.items() if n.rsplit("_", 1)[0] in CSF_FROM for i in ids]
    prot = np.array(sorted({i for ids in mb.structure_labels.values() for i in ids}))
    source = np.isin(mb.labels, src).astype(np.float32)
    where = np.argwhere(source > 0)
    table = mb.label_table.set_index("name")["index"]
    horn = {"L": int(table["Left_Inf_Lat_Vent"]), "R": int(table["Right_Inf_Lat_Vent"])}
    lo = mb.grid.world_coords(where.min(0).astype(float)) - _MTL_MARGIN_MM
    hi = mb.grid.world_coords(where.max(0).astype(float)) + _MTL_MARGIN_MM
    near = ndi.distance_transform_edt(source == 0, sampling=mb.grid.resolution) <= _MTL_MARGIN_MM
    protected = np.isin(mb.labels, prot).astype(np.float32)
    return _MTLMaps(source, protected, prot, horn, near.astype(np.float32), lo, hi)


def mtl_csf(deformation: Deformation, points: np.ndarray, y_full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of each point whose hippocampal/amygdala tissue was lost and is now CSF.

    The lost tissue is what the same subject would have there without the
    medial temporal shrink (ageing and disease): ``h0 - h1``, where ``h`` is the
    partial-volume hippocampus+amygdala membership of the point's pull-back
    without (``h0``) and with (``h1``) the shrink. It is taken from the point's
    unsolved labels only (white matter, temporal horn, sulcal CSF, ...), so every
    solved structure keeps exactly its solved volume. Times :data:`MTL_CSF_FILL`.

    Returns
    -------
    csf : numpy.ndarray
        0–1 per point.
    free : numpy.ndarray
        Partial-volume share of the point not in a solved structure (``csf <= free``).
    """
    maps, grid = _mtl_maps(), measure_base().grid
    csf = np.zeros(len(points), np.float32)
    free = np.ones(len(points), np.float32)
    shrink = [n for n in deformation.amplitudes if n.rsplit("_", 1)[0] in CSF_FROM]
    near = np.flatnonzero(np.all((y_full >= maps.lo) & (y_full <= maps.hi), axis=1))
    near = near[_sample(maps.near, grid, y_full[near], order=0) > 0]
    if not shrink or not near.size:
        return csf, free
    amps = {n: a for n, a in deformation.amplitudes.items() if n not in shrink}
    y0 = Deformation(warp=deformation.warp, amplitudes=amps, mass=deformation.mass)(points[near])
    h0 = _sample(maps.source, grid, y0)
    h1 = _sample(maps.source, grid, y_full[near])
    free[near] = np.clip(1.0 - _sample(maps.protected, grid, y_full[near]), 0.0, 1.0)
    csf[near] = np.clip(np.minimum(MTL_CSF_FILL * (h0 - h1), free[near]), 0.0, 1.0)
    return csf, free


def mtl_volumes(y: np.ndarray, cell_mm3: float, weights: np.ndarray, csf: np.ndarray, free: np.ndarray) -> np.ndarray:
    """:func:`soft_label_volumes` with the lost medial temporal tissue moved to the temporal horn."""
    volumes = soft_label_volumes(y, cell_mm3, weights)
    sel = np.flatnonzero(csf > 0)
    if not sel.size:
        return volumes
    maps = _mtl_maps()
    moved = weights[sel] * csf[sel]
    taken = soft_label_volumes(y[sel], cell_mm3, moved / np.maximum(free[sel], 1e-6))
    taken[maps.protected_ids] = 0.0
    volumes -= taken
    left = y[sel, 0] < 0
    volumes[maps.horn["L"]] += moved[left].sum() * cell_mm3
    volumes[maps.horn["R"]] += moved[~left].sum() * cell_mm3
    return volumes


def _horn_labels(labels: np.ndarray, csf: np.ndarray, x_template: np.ndarray) -> np.ndarray:
    """Label points mostly turned into CSF (and not in a solved structure) as temporal horn."""
    maps = _mtl_maps()
    relabel = (csf > 0.5) & ~np.isin(labels, maps.protected_ids)
    return np.where(relabel, np.where(x_template < 0, maps.horn["L"], maps.horn["R"]), labels).astype(labels.dtype)


def _tumour_intensity(site: Site) -> dict[int, float]:
    c, g, w = site.csf, site.gm, site.wm
    return {1: c + 0.15 * (g - c), 2: c + 0.8 * (g - c), 3: g + 0.35 * (w - g)}


_SOLID = {"glioma": None, "meningioma": 0.92, "pituitary": 0.97}


@dataclass
class Rendered:
    """A rendered subject.

    ``t1``, ``mask``, ``tumour``, ``labels`` are arrays on ``affine``;
    ``to_mni`` (native only) is the true transform, ``regions`` the true volumes,
    ``mtl_csf_mm3`` the CSF (mm³, MNI-aligned) that replaced lost hippocampus/amygdala per hemisphere.
    """

    t1: np.ndarray
    mask: np.ndarray
    tumour: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    regions: pd.DataFrame
    report: dict
    to_mni: dict | None = None
    mtl_csf_mm3: dict[str, float] = field(default_factory=dict)


def _sample(arr: np.ndarray, grid: anatomy.Grid, points: np.ndarray, order: int = 1) -> np.ndarray:
    idx = ((points - grid.affine[:3, 3]) / grid.resolution).T
    return ndi.map_coordinates(arr, idx, order=order, mode="constant", cval=0.0, prefilter=False)


def _pullbacks(deformation: Deformation, points: np.ndarray, base: BaseAnatomy) -> tuple[np.ndarray, np.ndarray]:
    """Structural and full pull-back of points, and the intracranial mask (0–1) at them."""
    y_struct = deformation.structural(points)
    icv = _sample(base.mask, base.grid, y_struct)
    y_full = y_struct
    if deformation.mass is not None:
        moved_pts = deformation.mass(points)
        moved = np.any(np.abs(moved_pts - points) > 1e-3, axis=1) & (icv > 0.5)
        y_full = y_struct.copy()
        y_full[moved] = deformation.structural(moved_pts[moved])
    return y_struct, y_full, icv


def _paint_tumour(
    spec: SubjectSpec, points: np.ndarray, y_full: np.ndarray, icv: np.ndarray, base: BaseAnatomy
) -> tuple[np.ndarray, np.ndarray]:
    """Tumour labels at points (zeros where none) and the index of points near the tumour."""
    lab = np.zeros(len(points), np.uint8)
    if spec.tumour is None:
        return lab, np.zeros(0, int)
    near = np.flatnonzero(spec.tumour.near(points))
    wm = _sample(base.wm, base.grid, y_full[near])
    lab[near] = spec.tumour.labels(points[near], wm, icv[near])
    return lab, near


def _regions(volumes: np.ndarray, det: float) -> pd.DataFrame:
    table = measure_base().label_table[["index", "name", "hemisphere"]].copy()
    mni = volumes[table["index"].to_numpy()]
    table["volume_mm3"] = np.round(mni * det, 2)
    table["volume_mni_mm3"] = np.round(mni, 2)
    return table.reset_index(drop=True)


def _csf_by_hemisphere(y: np.ndarray, csf: np.ndarray, weights: np.ndarray, cell_mm3: float) -> dict[str, float]:
    moved = weights * csf * cell_mm3
    left = y[:, 0] < 0
    return {"L": round(float(moved[left].sum()), 2), "R": round(float(moved[~left].sum()), 2)}


def _fill_csf(intensity: np.ndarray, csf: np.ndarray, spec: SubjectSpec, site: Site) -> np.ndarray:
    """Partial-volume mix of the lost medial temporal tissue with CSF."""
    return intensity + csf * (site.csf * float(spec.tissue_jitter[0]) - intensity)


def _apply_tumour(img: np.ndarray, tum: np.ndarray, spec: SubjectSpec, site: Site) -> np.ndarray:
    if spec.tumour is None or not tum.any():
        return img
    mu = _tumour_intensity(site)
    if _SOLID[spec.tumour.kind] is not None:
        mu[2] = _SOLID[spec.tumour.kind] * site.gm
    mu = {k: v * float(np.mean(spec.tissue_jitter)) for k, v in mu.items()}
    out = img.copy()
    oed = tum == 3
    out[oed] = np.minimum(out[oed], 0.4 * out[oed] + 0.6 * mu[3])
    for k in (1, 2):
        out[tum == k] = mu[k]
    return out


def render_mni(spec: SubjectSpec, resolution: float = 2.0) -> Rendered:
    """Render a subject on ``standard_grid(resolution)``: skull-stripped, bias-free, z-scored in the brain."""
    grid = anatomy.standard_grid(resolution)
    base = base_anatomy(grid)
    site = SITES[spec.site]
    deformation, report = solve_deformation(spec)
    points = grid_points(grid)
    y_struct, y_full, icv = _pullbacks(deformation, points, base)
    csf, free = mtl_csf(deformation, points, y_full)
    tum, _ = _paint_tumour(spec, points, y_full, icv, base)
    intensity = _sample(_tissue_intensity(base, spec, site, head=False), grid, y_full)
    intensity = _apply_tumour(_fill_csf(intensity, csf, spec, site), tum, spec, site)
    labels = _horn_labels(_sample(base.labels, grid, y_full, order=0).astype(np.int16), csf, y_full[:, 0])
    labels[(tum == 1) | (tum == 2)] = 0
    mask = (icv > 0.5) | (tum > 0)
    labels[~mask] = 0
    shape = grid.shape
    img = contrast_curve(intensity.reshape(shape), site)
    img = partial_volume_blur(img, 0.35)
    noise_sigma = float(site.wm**site.gamma / spec.snr * (1.0 / resolution) ** 1.5)
    img = add_rician_noise(img, noise_sigma, spec.rng("noise"))
    mask3 = mask.reshape(shape)
    vals = img[mask3]
    img = np.where(mask3, (img - vals.mean()) / max(float(vals.std()), 1e-6), 0.0).astype(np.float32)
    if resolution == 2.0:
        vol_pts, vol_y, vol_tum, vol_csf, vol_free = points, y_full, tum, csf, free
    else:
        g2 = anatomy.standard_grid(2.0)
        vol_pts = grid_points(g2)
        _, vol_y, icv2 = _pullbacks(deformation, vol_pts, base_anatomy(g2))
        vol_tum, _ = _paint_tumour(spec, vol_pts, vol_y, icv2, base_anatomy(g2))
        vol_csf, vol_free = mtl_csf(deformation, vol_pts, vol_y)
    weights = ((vol_tum != 1) & (vol_tum != 2)).astype(float)
    volumes = mtl_volumes(vol_y, 8.0, weights, vol_csf, vol_free)
    det = float(np.prod(spec.head_scale))
    return Rendered(
        t1=img, mask=mask3.astype(np.uint8), tumour=tum.reshape(shape), labels=labels.reshape(shape),
        affine=grid.affine, regions=_regions(volumes, det), report=report,
        mtl_csf_mm3=_csf_by_hemisphere(vol_y, vol_csf, weights, 8.0),
    )


# --------------------------------------------------------------------------- native space


def _rotation(deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def subject_to_scanner(spec: SubjectSpec) -> np.ndarray:
    """4x4 affine from the subject's MNI-aligned mm to scanner mm (head size, then pose)."""
    aff = np.eye(4)
    aff[:3, :3] = _rotation(spec.rotation_deg) @ np.diag(spec.head_scale)
    aff[:3, 3] = spec.translation_mm
    return aff


@lru_cache(maxsize=1)
def _head_surface() -> np.ndarray:
    g = head_grid(4.0)
    base = base_anatomy(head_grid(1.0))
    d = ndi.zoom(base.outside_mm, 0.25, order=1)[: g.shape[0], : g.shape[1], : g.shape[2]]
    head = d < 15.0
    return g.world_coords(np.argwhere(head & ~ndi.binary_erosion(head)).astype(float))


def native_affine(spec: SubjectSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxel-to-scanner affine and shape of the subject's native image (site voxel size/orientation)."""
    site = SITES[spec.site]
    pts = apply(subject_to_scanner(spec), _head_surface())
    lo, hi = pts.min(0) - 10.0, pts.max(0) + 10.0
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    shape = []
    for k, code in enumerate(site.orientation):
        world_axis, sign = axes[code]
        zoom = site.voxel_mm[k]
        n = int(np.ceil((hi[world_axis] - lo[world_axis]) / zoom)) + 1
        aff[world_axis, k] = sign * zoom
        aff[world_axis, 3] = lo[world_axis] if sign > 0 else hi[world_axis]
        shape.append(n)
    return aff, tuple(shape)


def render_native(spec: SubjectSpec) -> Rendered:
    """Render a whole-head scanner-space image (scalp, skull, pose, bias, site voxels/orientation)."""
    site = SITES[spec.site]
    hbase = base_anatomy(head_grid(1.0))
    g2 = head_grid(2.0)
    base2 = base_anatomy(g2)
    deformation, report = solve_deformation(spec)
    # pull-backs on a 2 mm subject grid, then interpolated at the native voxels
    pts2 = grid_points(g2)
    y_struct2, y_full2, icv2 = _pullbacks(deformation, pts2, base2)
    tum2, _ = _paint_tumour(spec, pts2, y_full2, icv2, base2)
    csf2, free2 = mtl_csf(deformation, pts2, y_full2)
    weights = ((tum2 != 1) & (tum2 != 2)).astype(float)
    volumes = mtl_volumes(y_full2, g2.voxel_volume, weights, csf2, free2)
    aff, shape = native_affine(spec)
    to_subject = np.linalg.inv(subject_to_scanner(spec)) @ aff
    hb = hbase.grid
    # composed pull-back in 1 mm head-grid voxel units, interpolated at every native voxel
    yv = ((y_full2 - hb.affine[:3, 3]) / hb.resolution).astype(np.float32).reshape(*g2.shape, 3)
    idx = _native_index(np.linalg.inv(g2.affine) @ to_subject, shape)
    y = np.empty(idx.shape, np.float32)
    for k in range(3):
        ndi.map_coordinates(yv[..., k], idx, output=y[k], order=1, mode="nearest", prefilter=False)
    icv = ndi.map_coordinates(
        icv2.reshape(g2.shape).astype(np.float32), idx, output=np.float32, order=1, prefilter=False
    )
    csf = _native_csf(csf2.reshape(g2.shape), idx)
    del idx, yv
    intensity = ndi.map_coordinates(
        _tissue_intensity(hbase, spec, site, head=True), y, output=np.float32, order=1, prefilter=False
    )
    labels = ndi.map_coordinates(hbase.labels, y, order=0, prefilter=False).astype(np.int16)
    if csf is not None:
        intensity = _fill_csf(intensity, csf, spec, site)
        labels = _horn_labels(labels, csf, hb.affine[0, 3] + hb.resolution * y[0])
    tum = np.zeros(intensity.size, np.uint8)
    if spec.tumour is not None:
        sub = _native_box(spec.tumour, np.linalg.inv(to_subject), shape)
        m = apply(to_subject, np.stack(np.unravel_index(sub, shape), 1).astype(float))
        wm = ndi.map_coordinates(hbase.wm, y[:, sub], order=1, prefilter=False)
        tum[sub] = spec.tumour.labels(m, wm, icv[sub])
    del y
    intensity = _apply_tumour(intensity, tum, spec, site)
    mask = (icv > 0.5) | (tum > 0)
    labels[~mask | (tum == 1) | (tum == 2)] = 0
    img = contrast_curve(intensity.reshape(shape), site)
    img = partial_volume_blur(img, 0.5)
    img *= bias_field(shape, spec.rng("scan"), spec.bias_strength)
    img = add_rician_noise(img, float(site.wm**site.gamma / spec.snr), spec.rng("noise"))
    t1 = np.clip(img * site.scale, 0, 32767).astype(np.int16)
    to_mni = _true_transform(spec, deformation)
    return Rendered(
        t1=t1, mask=mask.reshape(shape).astype(np.uint8), tumour=tum.reshape(shape),
        labels=labels.reshape(shape), affine=aff,
        regions=_regions(volumes, float(np.prod(spec.head_scale))), report=report, to_mni=to_mni,
        mtl_csf_mm3=_csf_by_hemisphere(y_full2, csf2, weights, g2.voxel_volume),
    )


def _native_csf(csf2: np.ndarray, idx: np.ndarray) -> np.ndarray | None:
    """The 2 mm CSF fraction at native voxels (``None`` when there is none)."""
    if not csf2.any():
        return None
    return ndi.map_coordinates(csf2.astype(np.float32), idx, output=np.float32, order=1, prefilter=False)


def _native_index(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``affine`` applied to every voxel index of ``shape``, as ``(3, N)`` float32 (separable, fast)."""
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
    out = np.empty((3, *shape), np.float32)
    a = affine.astype(np.float32)
    for c in range(3):
        out[c] = a[c, 0] * i[:, None, None] + a[c, 1] * j[None, :, None] + (a[c, 2] * k + a[c, 3])[None, None, :]
    return out.reshape(3, -1)


def _native_box(tumour: Tumour, to_native: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Flat indices of the native voxels in the tumour's bounding box."""
    e = tumour.extent_mm
    corners = tumour.centre + e * np.array(list(np.ndindex(2, 2, 2))) * 2 - e
    ijk = apply(to_native, corners)
    lo = np.clip(np.floor(ijk.min(0)).astype(int), 0, shape)
    hi = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 0, shape)
    grid = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
    return np.ravel_multi_index(tuple(g.ravel() for g in grid), shape)


def _true_transform(spec: SubjectSpec, deformation: Deformation) -> dict:
    """Scanner mm of every point of the 2 mm MNI grid, and the affine part of the transform.

    The structural warp is inverted on a 4 mm lattice of the grid and
    interpolated (it is smooth), then mapped to the scanner by head size and pose.
    """
    grid = anatomy.standard_grid(2.0)
    coarse_shape = tuple(n // 2 + 1 for n in grid.shape)
    y = grid_points(anatomy.Grid(coarse_shape, grid.affine @ np.diag([2, 2, 2, 1.0]), 4.0))
    m = invert(deformation.structural, y).reshape(*coarse_shape, 3)
    idx = np.stack(np.meshgrid(*[np.arange(n) / 2.0 for n in grid.shape], indexing="ij")).reshape(3, -1)
    fine = np.stack([ndi.map_coordinates(m[..., k], idx, order=1, prefilter=False) for k in range(3)], 1)
    s = apply(subject_to_scanner(spec), fine)
    return {
        "grid": grid,
        "coords": s.reshape(*grid.shape, 3).astype(np.float32),
        "affine": np.linalg.inv(subject_to_scanner(spec)),
    }


def render_subject(spec: SubjectSpec, space: str = "mni", resolution: float = 2.0) -> Rendered:
    """Render ``spec`` in ``"mni"`` (standard grid at ``resolution``) or ``"native"`` space."""
    if space == "mni":
        return render_mni(spec, resolution)
    if space == "native":
        return render_native(spec)
    raise ValueError(f"space must be 'mni' or 'native', got {space!r}")


def without_disease(spec: SubjectSpec) -> SubjectSpec:
    """The same subject with no disease shrink (for before/after comparisons)."""
    return dataclasses.replace(spec, severity=0.0)
