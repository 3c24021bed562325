"""ds01.host: the host side of GPU access (BRIEF §2): files rendered from the config, installed
by `ds01 host apply`, and verified by `ds01 doctor`.

    hostaccess  the <run-dir>/host-access file format (shared with ds01d, which keeps it current)
    users       who the ds01 users are (config + NSS) and which groups they are missing from
    profile     the login-path texts: profile script, bash.bashrc block, pam_env block
    edits       pure edits of files ds01 shares with others (managed blocks, TOML keys, JSON keys)
    render      config → every host file ds01 manages, as {path: (content, mode)}; pure
    apply       install a rendering under a root: diff, backup, atomic write, group changes,
                and the device nodes' owner and mode now
    devnodes    which /dev/nvidia* nodes must exist and their owner and mode (apply and ds01d's
                device watch share it)
    doctor/     one module per area of checks; the runner and its --fix

Queries are never blocked: nothing here wraps, moves or replaces an NVIDIA binary, except that
`doctor --fix` moves aside a *script* that shadows nvidia-smi (the DS01 incident). Must not
import cli, client, daemon, services or store.
"""
