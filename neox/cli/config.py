"""`neox config`: check and show upstream GPT-NeoX YAML configs, and the dry run.

    neox config check FILE... [key=value ...] [--world-size N]
    neox config show  FILE... [key=value ...] [--world-size N] [--all | --plan-only]
    neox config show --doc [KEY]

Arguments containing ``=`` are overrides (YAML-typed, dotted paths reach into nested blocks);
the others are config files, merged in order. Nothing here imports torch, so both commands
take well under a second.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  neox config check configs/pythia-160m.yml configs/local-setup.yml
  neox config show configs/llama-1b.yml configs/local-setup.yml train_iters=1000 optimizer.params.lr=3e-4
  neox config show configs/pythia-1.4b.yml padded_vocab_size=50304 --world-size 256 --plan-only
  neox config show --doc rotary_pct

Without --world-size the world size comes from WORLD_SIZE, the config's global_num_gpus, or a
fully given batch triad (train_batch_size, micro batch and gradient_accumulation_steps), else it
is pipe x tensor parallel size (one data-parallel replica).
Errors are one line on stderr (file:line, key, value, what is allowed, the fix); exit status 1.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "config",
        help="check and show NeoX YAML configs; dry run for any world size",
        description="Check and show upstream GPT-NeoX YAML configs (merged, overridden, validated, derived).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="validate configs; exit 0 if they load, 1 with a one-line error if not")
    _check_options(check, remainder=True)
    check.set_defaults(handler=run_check)

    show = actions.add_parser("show", help="print the merged and derived config as YAML, then the dry run")
    _show_options(show, remainder=True)
    show.set_defaults(handler=run_show)


def _check_options(p: argparse.ArgumentParser, remainder: bool) -> None:
    # The registry parses with parse_args, which cannot put options after a '*' positional; the
    # subcommand takes the rest verbatim and re-parses it with parse_intermixed_args (_reparse).
    nargs = argparse.REMAINDER if remainder else "*"
    p.add_argument("args", nargs=nargs, metavar="FILE|key=value", help="config files in order, and key=value overrides")
    p.add_argument("--world-size", type=int, default=None, metavar="N", help="total GPUs to validate and plan for")


def _show_options(p: argparse.ArgumentParser, remainder: bool) -> None:
    _check_options(p, remainder)
    p.add_argument("--all", action="store_true", help="print every key, not only those that differ from upstream's defaults")
    p.add_argument("--plan-only", action="store_true", help="print only the dry run (parameters, FLOPs, batch, layout, memory)")
    p.add_argument("--doc", nargs="?", const="", metavar="KEY", help="document KEY (or list every key) and exit")


def _reparse(args, options) -> argparse.Namespace:
    """Options given after the files land in ``args.args``; parse them out."""
    p = argparse.ArgumentParser(prog=f"neox config {args.action}", add_help=False)
    options(p, remainder=False)
    parsed = p.parse_intermixed_args(args.args)
    for name, value in vars(parsed).items():
        if name != "args" and value not in (None, False):
            setattr(args, name, value)
    args.args = parsed.args
    return args


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    files = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return files, overrides


def _load(args):
    from neox.config import load
    from neox.errors import ConfigError

    files, overrides = _split(args.args)
    if not files:
        raise ConfigError("no config file given; run `neox config check FILE.yml [more.yml] [key=value ...]`")
    return load(files, overrides, world_size=args.world_size)


def run_check(args) -> int:
    args = _reparse(args, _check_options)
    cfg = _load(args)
    print(f"ok: {' '.join(cfg.files)}")
    print(f"    {cfg.summary()}")
    if cfg.padded_vocab_size is None:
        print(f"    note: padded_vocab_size is unknown here ({cfg.note('padded_vocab_size')}); "
              "model building and the dry run need the tokenizer file or padded_vocab_size=N")
    return 0


def run_show(args) -> int:
    args = _reparse(args, _show_options)
    if args.doc is not None:
        print(_doc(args.doc))
        return 0
    import yaml

    from neox.config.plan import format_plan, plan
    from neox.config.schema import KEYS
    from neox.errors import ConfigError

    cfg = _load(args)
    try:
        report = format_plan(plan(cfg))
    except ConfigError as err:
        report = f"dry run unavailable: {err}"
    if args.plan_only:
        print(report)
        return 0
    values = cfg.to_dict()
    derived_section = {name for name, info in KEYS.items() if info.section == "derived" or info.derived}
    skip = {"config_files", "git_hash", "save_iters"}
    merged = {k: v for k, v in values.items() if k not in derived_section and k not in skip and (args.all or v != KEYS[k].default)}
    derived = {k: values[k] for k in values if k in derived_section and k not in skip}
    out = sys.stdout
    out.write(f"# merged config: {' '.join(cfg.files)}\n")
    out.write(yaml.safe_dump(merged, sort_keys=False, default_flow_style=None, width=110))
    out.write(f"---\n# derived values (world size {cfg.world_size}: {cfg.note('world_size')})\n")
    out.write(yaml.safe_dump(derived, sort_keys=False, default_flow_style=None, width=110))
    out.write("# dry run\n")
    out.write("".join(f"#   {line}\n" for line in report.splitlines()))
    return 0


def _doc(name: str) -> str:
    from neox.config.schema import KEYS, SECTIONS
    from neox.config.validate import unknown_key_message
    from neox.errors import ConfigError

    if name:
        norm = name.replace("-", "_")
        if norm not in KEYS:
            raise ConfigError(unknown_key_message(norm))
        info = KEYS[norm]
        status = "implemented" if info.implemented else f"upstream feature neox does not implement ({info.hint})"
        lines = [
            f"{info.name}  [{info.section}]",
            f"  {info.doc}",
            f"  type: {info.type_name()}",
            f"  default: {info.default!r}",
            f"  status: {status}" + ("; derived" if info.derived else ""),
        ]
        if info.unimplemented_values:
            lines.append(f"  not implemented: {', '.join(info.unimplemented_values)} ({info.hint})")
        return "\n".join(lines)
    lines = []
    for section, _ in SECTIONS:
        lines.append(f"[{section}]")
        for info in KEYS.values():
            if info.section == section:
                mark = "" if info.implemented else "  (not implemented)"
                lines.append(f"  {info.name} = {info.default!r}: {info.doc}{mark}")
    return "\n".join(lines)
