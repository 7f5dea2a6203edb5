# Configuration validation, targets and wildcard constraints shared by every rule file.
import re
import sys

from preimage.config import ConfigError, load_schema, validate_config

# deep: torchvision model/node names and image counts, checked once by the main process (not again
# by every job a cluster executor starts).
try:
    _validated = validate_config(config, load_schema(workflow.source_path("../workflow/schemas/config.schema.yaml")),
                                 deep=getattr(workflow, "is_main_process", True))
except ConfigError as _err:
    sys.stderr.write(f"preimage: {_err}\n")
    raise SystemExit(1)
config.clear()
config.update(_validated)

R = config["results"]


def workflow_is_main():
    """True in the Snakemake process the user started (notes are printed there only)."""
    return getattr(workflow, "is_main_process", True)


DATA = config["data"]
FEATURES = config["features"]


def rep_slug(name):
    """File-system name of a representation: torchvision:resnet50:layer4 → resnet50@layer4,
    efficientnet_lite0:stages.3 → efficientnet_lite0@stages.3."""
    if name.startswith("torchvision:"):
        _, model, node = name.split(":", 2)
        return f"{model}@{node}"
    return name.replace(":", "@", 1)


def rep_family(name):
    """The config section under features: that parameterises a representation."""
    if name in ("hog", "lbp", "sift"):
        return name
    if name.startswith("torchvision:"):
        return "torchvision"
    if name.startswith("efficientnet_lite0:"):
        return "efficientnet_lite0"
    return "alexnet"


#: Families of CNN representations (features.<family> has weights/seed/crop).
CNN_FAMILIES = ("alexnet", "torchvision", "efficientnet_lite0")


ALEXNET_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
#: The configured representations, by file-system name.
BASE_REPS = {rep_slug(name): name for name in config["representations"]}
#: Variants of AlexNet layers (§5.2): {layer}-ae autoencoders, {layer}-random untrained controls,
#: only for layers in ``representations`` (as the analyses' layer lists; the rest are noted).
AE_LAYERS = [l for l in dict.fromkeys(config["variants"]["autoencoder"]) if l in BASE_REPS]
_ae_skipped = [l for l in config["variants"]["autoencoder"] if l not in BASE_REPS]
if _ae_skipped and workflow_is_main():
    sys.stderr.write(f"preimage: note: variants.autoencoder skips {', '.join(_ae_skipped)} "
                     "(not in representations)\n")
_control = config["variants"]["untrained_control"]


def _gets_control(name):
    family = rep_family(name)
    if family not in CNN_FAMILIES or _control == "never":
        return False
    return _control == "always" or FEATURES[family]["weights"] != "random"


RANDOM_LAYERS = [slug for slug, name in BASE_REPS.items() if _gets_control(name)]
#: Every representation that gets a feature cache, a decoder and an error.csv: slug → base name.
REPS = {**BASE_REPS, **{f"{l}-ae": l for l in AE_LAYERS}, **{f"{s}-random": BASE_REPS[s] for s in RANDOM_LAYERS}}


def scaled_runtime(minutes):
    """A job's time limit in minutes, growing with each retry (``--retries``): a job killed at its
    limit is resubmitted with twice, three times … the time, and resumes from its checkpoint."""
    return lambda wildcards, attempt: minutes * attempt


def lift_local_gpu_cap():
    """profiles/default caps GPU jobs for one machine (``resources: gpu=1``), and Snakemake loads it
    on top of any ``--profile``. Under a cluster executor SLURM hands out the GPUs, so the cap
    would run one GPU job at a time on the whole cluster: raise it to ``--jobs`` there. The executor
    is not known while the Snakefile is read; Snakemake sets ``nodes`` (from ``--jobs``) only for
    non-local executors (its own scheduler lifts the core limit on the same sign). Locally with
    both --cores and --jobs the cap rises too, and the per-GPU locks of preimage.devices still keep
    one job per GPU."""
    settings = getattr(workflow, "resource_settings", None)
    resources = getattr(workflow, "global_resources", None)
    if getattr(settings, "nodes", None) is None or resources is None or "gpu" not in resources:
        return
    try:
        resources["gpu"] = max(int(settings.nodes), int(resources["gpu"].value or 0))
    except Exception as err:  # a future Snakemake may keep resources elsewhere: say so
        sys.stderr.write(f"preimage: warning: could not lift the local gpu cap ({err}); "
                         "GPU jobs may run one at a time. Pass --resources gpu=<n>.\n")


lift_local_gpu_cap()


def display_name(slug):
    """The name in tables: the configured name, with the variant's suffix (fc6-ae,
    efficientnet_lite0:fc-random)."""
    return f"{REPS[slug]}-{variant(slug)}" if variant(slug) else REPS[slug]


def variant(slug):
    """'ae', 'random' or None."""
    if slug.endswith("-ae") and slug[:-3] in ALEXNET_LAYERS:
        return "ae"
    if slug.endswith("-random") and slug[:-7] in BASE_REPS:
        return "random"
    return None


def feature_params(slug):
    """Parameters of one representation: only its own family's keys, so that changing hog's
    parameters reruns hog's cache and nothing else."""
    params = dict(FEATURES[rep_family(REPS[slug])])
    if variant(slug) == "random":
        params["weights"] = "random"
    elif variant(slug) == "ae":
        params["weights"] = f"{R}/{slug}/encoder.pt"
    return params


def feature_extra_inputs(wc):
    """The autoencoder's features need its fine-tuned encoder."""
    return [f"{R}/{wc.rep}/encoder.pt"] if variant(wc.rep) == "ae" else []


def per_rep(value, slug):
    """A config value that is either one value or a mapping {default: v, <rep>: v}."""
    if isinstance(value, dict):
        return value.get(slug, value.get(REPS.get(slug, slug), value.get("default")))
    return value


def train_params(slug):
    """Training and decoder parameters of one representation (only its own epochs/width)."""
    cfg = {k: v for k, v in config["train"].items() if k != "threads"}
    cfg["epochs"] = per_rep(cfg["epochs"], slug)
    cfg["width"] = per_rep(config["decoder"]["width"], slug)
    cfg["upsample"] = config["decoder"]["upsample"]
    return cfg


def uses_gpu(slug):
    return rep_family(REPS[slug]) in CNN_FAMILIES


def slug_pattern(slugs):
    """A wildcard constraint matching exactly ``slugs`` (nothing when empty)."""
    return "|".join(re.escape(slug) for slug in slugs) or "(?!)"


#: Feature jobs split by device so a cluster profile can send each to its own partition.
GPU_FEATURE_REPS = [slug for slug in REPS if uses_gpu(slug)]
CPU_FEATURE_REPS = [slug for slug in REPS if not uses_gpu(slug)]


wildcard_constraints:
    split="train|test",
    rep=slug_pattern(REPS),


def data_params():
    """Every data.* value that changes the extracted images (threads/log_every excluded)."""
    return {k: v for k, v in DATA.items() if k not in ("threads", "log_every")}


def all_targets():
    targets = [f"{R}/data/train.h5", f"{R}/data/test.h5"]
    targets += expand(f"{R}/features/{{rep}}/{{split}}.h5", rep=list(REPS), split=["train", "test"])
    targets += expand(f"{R}/{{rep}}/{{file}}", rep=list(REPS), file=["error.csv", "reconstructions.png"])
    targets += aggregate_targets()
    return targets


def alexnet_slugs():
    """The configured AlexNet layers (variants excluded), in layer order."""
    return [l for l in ALEXNET_LAYERS if l in BASE_REPS]


def decoder_slugs():
    """Representations whose decoder the train rule makes (autoencoders have their own rule)."""
    return [s for s in REPS if variant(s) != "ae"]


def alternation(names):
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def shallow_slugs():
    return [s for s in ("hog", "sift", "lbp") if s in REPS]


def aggregate_targets():
    if not REPS:
        return []
    targets = [f"{R}/tables/errors.csv", f"{R}/tables/errors.md"]
    if alexnet_slugs():
        targets += [f"{R}/figures/error_by_layer.png", f"{R}/figures/reconstructions_alexnet.png"]
    if shallow_slugs():
        targets.append(f"{R}/figures/reconstructions_shallow.png")
    return targets + analysis_targets() + baseline_targets()


ANALYSES = config["analyses"]


def _configured(layers):
    """The configured ones of ``layers`` (representation names or slugs), as slugs."""
    slugs = [rep_slug(l) for l in layers]
    return [s for s in dict.fromkeys(slugs) if s in BASE_REPS]


def perturbation_slugs():
    layers = ANALYSES["perturbation"]["layers"]
    layers = alexnet_slugs() if layers is None else _configured(layers)
    return layers + [f"{l}-ae" for l in layers if l in AE_LAYERS]


def interpolation_slugs():
    return _configured(ANALYSES["interpolation"]["layers"])


def random_sample_slugs():
    return _configured(ANALYSES["random_samples"]["layers"])


def single_unit_slugs():
    """fc6-fc8, and any node of the other networks (a vector node is the user's choice there)."""
    return [l for l in _configured(ANALYSES["single_units"]["layers"])
            if l.startswith("fc") or rep_family(BASE_REPS[l]) in ("torchvision", "efficientnet_lite0")]


def mv_slugs():
    """M&V runs where its comparison decoder runs: configured names outside ``representations``
    are skipped, with a note (as for the analyses' layer lists)."""
    return _configured(config["baselines"]["mahendran_vedaldi"]["representations"])


_mv_skipped = [r for r in config["baselines"]["mahendran_vedaldi"]["representations"] if rep_slug(r) not in mv_slugs()]
if _mv_skipped:
    sys.stderr.write(f"preimage: note: baselines.mahendran_vedaldi skips {', '.join(_mv_skipped)} "
                     "(not in representations, so no decoder to compare with)\n")


def analysis_targets():
    targets = []
    for slug in perturbation_slugs():
        targets += [f"{R}/{slug}/analysis/perturbation.csv", f"{R}/figures/perturbation_{slug}.png"]
    if perturbation_slugs():
        targets.append(f"{R}/tables/perturbation.csv")
    for slug in interpolation_slugs():
        targets.append(f"{R}/figures/interpolation_{slug}.png")
    if interpolation_slugs():
        targets.append(f"{R}/figures/interpolation.png")
    for slug in random_sample_slugs():
        targets += [f"{R}/{slug}/analysis/random_samples.csv", f"{R}/figures/random_samples_{slug}.png"]
    for slug in single_unit_slugs():
        targets.append(f"{R}/figures/single_units_{slug}.png")
    if "fc8" in BASE_REPS and ANALYSES["dark_knowledge"]["enabled"]:
        targets += [f"{R}/fc8/analysis/dark_knowledge.csv", f"{R}/figures/dark_knowledge.png"]
    if "fc8" in BASE_REPS and ANALYSES["hue_shift"]["enabled"]:
        targets += [f"{R}/fc8/analysis/hue_shift.csv", f"{R}/figures/hue_shift.png"]
    if "hog" in BASE_REPS and ANALYSES["brightness"]["enabled"]:
        targets += [f"{R}/hog/analysis/brightness.csv", f"{R}/figures/brightness.png"]
    if REPS:
        targets.append(f"{R}/findings.md")
    return targets


def baseline_targets():
    targets = []
    for slug in mv_slugs():
        targets += [f"{R}/{slug}/mahendran_vedaldi.csv", f"{R}/figures/mahendran_vedaldi_{slug}.png"]
    if mv_slugs():
        targets += [f"{R}/tables/mahendran_vedaldi.csv", f"{R}/tables/mahendran_vedaldi.md"]
    return targets


def analysis_params():
    """Settings every analysis job shares."""
    return {k: ANALYSES[k] for k in ("device", "seed", "n_show")}


def representation_options(slug):
    """(name, parameters) to recreate a representation inside an analysis job."""
    return {"name": REPS[slug], "params": feature_params(slug)}
