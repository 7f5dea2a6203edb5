# Stage 4: the reconstruction error of every decoder on the test images (paper §3, §5.1).


rule evaluate:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        test_features=lambda wc: f"{R}/features/{CATALOG.features_of(wc.rep)}/test.h5",
        test_images=f"{R}/data/test.h5",
        train_features=lambda wc: f"{R}/features/{CATALOG.features_of(wc.rep)}/train.h5",
        train_images=f"{R}/data/train.h5",
    output:
        error=f"{R}/{{rep}}/error.csv",
        reconstructions=f"{R}/{{rep}}/reconstructions.h5",
    params:
        representation=lambda wc: CATALOG[wc.rep].display,
        # only what changes the numbers: figure settings (n_show) belong to the figure rules
        options={k: v for k, v in config["evaluate"].items() if k not in ("n_show", "threads")},
        # the decoders compared under Appendix A also get the feature error ‖Φ(x̂) − Φ(x)‖/‖Φ(x)‖
        feature_space=lambda wc: PLAN.feature_error_options(wc.rep),
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
        gpu=1,
    log:
        f"{R}/logs/evaluate/{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{rep}}.tsv"
    script:
        "../workflow/scripts/evaluate_decoder.py"
