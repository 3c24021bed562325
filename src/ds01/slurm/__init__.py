"""SLURM scale-out (issue 19, docs/slurm.md): ds01.yaml as the policy source of a SLURM cluster.

    policy   pure: Config + each node's inventory + who is in which group → the cluster's policy
             (GRES types and their gpueq billing weights, accounts, QOS, associations)
    render   pure: that policy → gres.conf, the slurm.conf snippet, cgroup.conf, sacctmgr script
    tools    the one module that runs SLURM's commands (sacctmgr, scontrol, sinfo, sbatch) and
             reads their parsable output
    diff     the live accounting (through tools) against the policy: only what would change

Must not import cli, client, daemon, services or store.
"""
