# Stage 6: the optimisation-based inversion of Mahendran & Vedaldi (CVPR 2015) next to our decoders.

MV = config["baselines"]["mahendran_vedaldi"]


rule mahendran_vedaldi:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/{{rep}}/mahendran_vedaldi.csv",
        images=f"{R}/{{rep}}/mahendran_vedaldi.h5",
        figure=report(
            f"{R}/figures/mahendran_vedaldi_{{rep}}.png",
            caption="../workflow/report/mahendran_vedaldi.rst",
            category="Baselines",
            subcategory="Mahendran & Vedaldi",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.mahendran_vedaldi_slugs()),
    params:
        common=analysis_params(),
        representation=lambda wc: PLAN.options(wc.rep),
        # every baselines.mahendran_vedaldi setting (sigma resolved for this representation), images included
        optimisation=lambda wc: PLAN.mahendran_vedaldi_options(wc.rep),
        device=MV["device"],
    threads: MV["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(480),
        gpu=1,
    log:
        f"{R}/logs/baselines/mahendran_vedaldi_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/baselines/{{rep}}/mahendran_vedaldi.tsv"
    script:
        "../workflow/scripts/baselines_mahendran_vedaldi.py"
