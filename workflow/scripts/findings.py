"""Snakemake adapter: rule findings → preimage.findings.write_findings."""
from preimage import logs

with logs.job(snakemake):
    from preimage.findings import write_findings

    write_findings({k: v for k, v in snakemake.input.items()}, snakemake.output[0])
