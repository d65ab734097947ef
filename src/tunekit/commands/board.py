"""tunekit board: the training board in the browser, data to chat (127.0.0.1; elsewhere only with a password)."""

import os


def add_arguments(parser):
    parser.add_argument("--runs", default="runs", help="folder of the runs the board writes and lists (default: runs)")
    parser.add_argument("--model", default="", help="base model to start with: a local directory or a hub id")
    parser.add_argument("--data", default="", help="dataset to start with: file, folder, glob or hub name")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; any other than 127.0.0.1 needs --password")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs --password)")
    parser.add_argument("--user", default="tunekit", help="login name when a password is set (default: tunekit)")
    parser.add_argument("--password", default=os.environ.get("TUNEKIT_BOARD_PASSWORD"),
                        help="require this password (default: $TUNEKIT_BOARD_PASSWORD)")


def run(args) -> int:
    from tunekit.serve.board import launch
    from tunekit.serve.board_data import Settings

    launch(args.runs, Settings(model=args.model, data=args.data), host=args.host, port=args.port, share=args.share,
           password=args.password, user=args.user)
    return 0
