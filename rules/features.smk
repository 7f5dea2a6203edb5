# Stage 2: the HDF5 feature cache, one file per representation and split. Two rules with one body:
# `features` for the CNN layers (a GPU job) and `shallow_features` for HOG/SIFT/LBP (CPU), so that
# profiles/slurm can send each to the right partition through set-resources. `use rule … with:`
# replaces the whole resources block, hence the shared part below.

FEATURE_RESOURCES = dict(mem_mb=8000, runtime=scaled_runtime(120))


rule features:
    conda:
        ENVIRONMENT
    input:
        images=f"{R}/data/{{split}}.h5",
        encoder=feature_extra_inputs,
    output:
        f"{R}/features/{{rep}}/{{split}}.h5",
    params:
        representation=lambda wc: CATALOG[wc.rep].name,
        options=lambda wc: feature_params(wc.rep),
        dtype=FEATURES["dtype"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        log_every=DATA["log_every"],
    threads: FEATURES["threads"]
    resources:
        **FEATURE_RESOURCES,
        gpu=1,
    wildcard_constraints:
        rep=alternation(CATALOG.feature_slugs(gpu=True)),
    log:
        f"{R}/logs/features/{{rep}}/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/features/{{rep}}/{{split}}.tsv"
    script:
        "../workflow/scripts/features_compute.py"


use rule features as shallow_features with:
    wildcard_constraints:
        rep=alternation(CATALOG.feature_slugs(gpu=False)),
    resources:
        **FEATURE_RESOURCES,
        gpu=0,
