# Stage 2: the HDF5 feature cache, one file per representation and split.


rule features:
    input:
        images=f"{R}/data/{{split}}.h5",
        encoder=feature_extra_inputs,
    output:
        f"{R}/features/{{rep}}/{{split}}.h5",
    params:
        representation=lambda wc: REPS[wc.rep],
        options=lambda wc: feature_params(wc.rep),
        dtype=FEATURES["dtype"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        log_every=DATA["log_every"],
    threads: FEATURES["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(120),
        gpu=lambda wc: 1 if uses_gpu(wc.rep) else 0,
    log:
        f"{R}/logs/features/{{rep}}/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/features/{{rep}}/{{split}}.tsv"
    script:
        "../workflow/scripts/compute_features.py"
