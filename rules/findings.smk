# Stage 7: "what we found", written from the run's own tables beside the paper's claims.


rule findings:
    conda:
        ENVIRONMENT
    input:
        unpack(findings_inputs),
    output:
        report(f"{R}/findings.md", caption="../workflow/report/findings.rst", category="Summary"),
    log:
        f"{R}/logs/findings.log",
    benchmark:
        f"{R}/benchmarks/findings.tsv"
    script:
        "../workflow/scripts/findings.py"
