"""tunekit push RUN_DIR REPO_ID [--private] [--dry-run]: upload a run or merged model with a model card."""


def add_arguments(parser):
    parser.add_argument("run_dir", help="a run directory written by `tunekit train`, or a merged model directory")
    parser.add_argument("repo_id", help="the Hub repository, e.g. me/ner-lora (created when missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the one `hf auth login` saved)")
    parser.add_argument("--dry-run", action="store_true", help="print the model card and the file list; upload nothing")


def run(args) -> int:
    from tunekit.export.hub import CARD_FILE, model_card, push, upload_files
    from tunekit.rundir import read_run

    if args.dry_run:
        run_info = read_run(args.run_dir)
        print(model_card(run_info))
        print("files:", *upload_files(run_info.path), f"{CARD_FILE} (the card above)", sep="\n  ")
        return 0
    print(f"pushed: {push(args.run_dir, args.repo_id, private=args.private, token=args.token)}")
    return 0
