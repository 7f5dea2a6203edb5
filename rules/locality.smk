# Mahendran & Vedaldi's locality experiment (src/preimage/locality.py): reconstructions from
# a window / a subset of channels of a layer, by the decoder and by the optimisation of
# rules/baselines.smk. Its settings live under analyses.locality; its jobs share the analyses'
# resources, logs and benchmark folders.


rule locality:
    """Reconstructions from a centred window / a subset of channels of a layer, by the decoder and by
    Mahendran & Vedaldi's optimisation of the masked objective (their locality experiment)."""
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/{{rep}}/analysis/locality.csv",
        figure=report(
            f"{R}/figures/locality_{{rep}}.png",
            caption="../workflow/report/locality.rst",
            category="Analyses",
            subcategory="Locality",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.analysis_slugs("locality")),
    params:
        common=analysis_params(),
        representation=lambda wc: PLAN.options(wc.rep),
        options={k: v for k, v in ANALYSES["locality"].items() if k not in ("layers", "enabled")},
        # the optimisation's other settings (lr, sigma, seed, batch size) from baselines.mahendran_vedaldi
        optimisation=lambda wc: PLAN.mahendran_vedaldi_options(wc.rep, "images", "iterations", "restarts"),
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/locality_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/analyses/{{rep}}/locality.tsv"
    script:
        "../workflow/scripts/locality_reconstructions.py"
