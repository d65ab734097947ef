"""The training board: one page from data to chat (Gradio).

    tunekit board --runs runs            # http://127.0.0.1:7861

Model -> data (format, FILE:LINE problems, a preview with the trained spans, token
lengths) -> method and settings (the exact YAML, downloadable) -> training (start, stop,
resume; progress, loss curve and log while it runs; every run of the folder with its
status) -> after (chat beside the base model, compare, merge, export).

The page only writes config files and runs the commands a user could type: training is
`tunekit train runs/NAME.yaml` in its own process (serve/jobs.py), compare / merge /
export are their commands, each shown with its output. Only chat loads a model into the
board's own process. It binds 127.0.0.1; another address or a share link needs a password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tunekit.config import METHODS, STAGES
from tunekit.errors import TunekitError
from tunekit.infer.engine import BASE
from tunekit.infer.params import GenerationParams
from tunekit.serve.board_data import (
    PACKING,
    Settings,
    board_config,
    check_data,
    config_yaml,
    length_histogram,
    loss_svg,
    parsed,
)
from tunekit.serve.jobs import Jobs, loss_points
from tunekit.serve.webui import answer_fn

QUANTS = ("f16", "q8_0", "q4_k_m")
CSS = ".trained { background: #c6efce; } #loss-curve svg { max-width: 100%; height: auto; }"


class Board:
    """The page's state: the runs folder, its training processes and the chat models loaded."""

    def __init__(self, runs: str | Path, env: dict | None = None):
        self.jobs = Jobs(runs, env)
        self.env = env
        self.downloads = Path(tempfile.mkdtemp(prefix="tunekit-board-"))
        self.engines: dict[str, object] = {}

    # -- settings and data ------------------------------------------------------------------
    def config(self, *fields) -> dict:
        return board_config(Settings(*fields), self.jobs.folder)

    def show_config(self, *fields):
        raw = self.config(*fields)
        text = config_yaml(raw)
        path = self.downloads / f"{fields[2] or 'run'}.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            parsed(raw)
            problem = ""
        except TunekitError as exc:
            problem = f"**config problem:** {exc}"
        return text, str(path), problem

    def check(self, *fields):
        report = check_data(self.config(*fields))
        problems = "\n".join(report.problems) or "no problems found"
        return ("\n".join(f"- `{line}`" for line in report.formats), problems, report.summary, report.preview,
                length_histogram(report.lengths))

    def import_gguf(self, path: str):
        """`tunekit import-gguf FILE runs/models/NAME`; the model field then names the imported directory."""
        source = Path(path.strip())
        if source.suffix.lower() != ".gguf" or not source.is_file():
            raise TunekitError(f"{path!r} is not a .gguf file: give the path of a GGUF model file to import")
        output = self.jobs.folder / "models" / source.stem
        text = ""
        for text in self.command(["import-gguf", str(source), str(output), "--overwrite"]):
            yield text, path
        yield text, str(output) if output.is_dir() else path

    def upload(self, file) -> str:
        folder = self.jobs.folder / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(file).name
        shutil.copyfile(file, target)
        return str(target)

    # -- training ---------------------------------------------------------------------------
    def start(self, *fields) -> str:
        raw = self.config(*fields)
        parsed(raw)
        name = fields[2]
        self.jobs.write_config(name, raw)
        self.engines.pop(name, None)
        self.jobs.start(name)
        return f"started: `{' '.join(self.jobs.command(name))}`"

    def resume(self, name: str) -> str:
        self.jobs.start(name, resume=True)
        self.engines.pop(name, None)
        return f"resumed: `{' '.join(self.jobs.command(name, resume=True))}`"

    def stop(self, name: str) -> str:
        self.jobs.stop(name)
        return f"stopped {name}; resume continues from its last checkpoint"

    def progress(self, name: str):
        status = self.jobs.status(name)
        total = f"/{status.total}" if status.total else ""
        loss = "" if status.loss is None else f" · loss {status.loss:.4f}"
        ckpt = "" if status.checkpoint is None else f" · checkpoint at step {status.checkpoint}"
        text = f"**{name}**: {status.state} · step {status.step}{total}{loss}{ckpt}"
        if status.error:
            text += f"\n\n{status.error}"
        return text, loss_svg(loss_points(self.jobs.run_dir(name))), self.jobs.log_tail(name, 12), self.jobs.table()

    # -- after training ---------------------------------------------------------------------
    def answerers(self, name: str) -> list[tuple[object, str]]:
        """(engine, adapter) for the result and for its base model."""
        from tunekit.infer.engine import Engine

        status = self.jobs.status(name)
        if status.state != "finished":
            raise TunekitError(f"run {name} is {status.state}: chat needs a finished run")
        if name not in self.engines:
            run_dir = str(self.jobs.run_dir(name))
            engine = Engine.load(run_dir)
            base = engine if engine.default_adapter != BASE else Engine.load(run_dir, base=True)
            self.engines[name] = [(engine, engine.default_adapter), (base, BASE)]
        return self.engines[name]

    def chat(self, message: str, name: str, *histories):
        histories = [list(h or []) + [{"role": "user", "content": message}] for h in histories]
        yield "", *histories
        params = GenerationParams(max_new_tokens=128)
        for i, (engine, adapter) in enumerate(self.answerers(name)):
            for history, _ in answer_fn(engine)(histories[i], adapter, "", params.max_new_tokens, 0.0, 1.0, 0,
                                                 1.0, None, []):
                histories[i] = history
                yield "", *histories

    def command(self, args: list[str]):
        """Run a tunekit command; yield (command line, output so far) while it runs."""
        line = "tunekit " + " ".join(args)
        process = subprocess.Popen([sys.executable, "-m", "tunekit", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=self.env)
        output = ""
        for chunk in process.stdout:
            output += chunk.rsplit("\r", 1)[-1]
            yield f"$ {line}\n{output}"
        process.wait()
        yield f"$ {line}\n{output}\n(exit status {process.returncode})"

    def compare(self, name: str, data: str):
        run_dir = self.jobs.run_dir(name)
        out = run_dir / "compare"
        text = ""
        for text in self.command(["compare", "base", str(run_dir), "--data", data, "--output", str(out),
                                  "--overwrite"]):
            yield text, ""
        report = out / "report.md"
        yield text, report.read_text(encoding="utf-8") if report.is_file() else ""

    def merge(self, name: str):
        run_dir = self.jobs.run_dir(name)
        yield from self.command(["merge", str(run_dir), "--output", f"{run_dir}-merged", "--overwrite"])

    def export(self, name: str, quant: str):
        yield from self.command(["export", str(self.jobs.run_dir(name)), "--format", "gguf", "--quant", quant])

    def close(self) -> None:
        self.jobs.stop_all()
        for pairs in self.engines.values():
            for engine, _ in pairs:
                engine.close()


def errors_as_messages(handler):
    """Show a TunekitError as a message on the page instead of a generic 'Error'."""
    import functools
    import inspect

    import gradio as gr

    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def stream(*args):
            try:
                yield from handler(*args)
            except TunekitError as exc:
                raise gr.Error(str(exc)) from None
        return stream

    @functools.wraps(handler)
    def call(*args):
        try:
            return handler(*args)
        except TunekitError as exc:
            raise gr.Error(str(exc)) from None
    return call


def build_app(board: Board, defaults: Settings):
    import gradio as gr

    e = errors_as_messages
    with gr.Blocks(title="tunekit board", analytics_enabled=False) as app:
        gr.Markdown(f"## tunekit board\nruns folder: `{board.jobs.folder}` · every action below is a `tunekit` "
                    "command you can also type")
        with gr.Accordion("1 · Model", open=True):
            with gr.Row():
                model = gr.Textbox(defaults.model, label="base model: a local directory, a hub id, or a .gguf file "
                                   "to import", elem_id="model", scale=4)
                import_gguf = gr.Button("Import GGUF", scale=1, elem_id="import-gguf")
            import_out = gr.Textbox(label="import", lines=2, visible=True, elem_id="import-output")
        with gr.Accordion("2 · Data", open=True):
            with gr.Row():
                data = gr.Textbox(defaults.data, label="dataset: file, folder, glob or hub name", elem_id="data",
                                  scale=4)
                upload = gr.UploadButton("Upload a file", file_types=[".json", ".jsonl", ".csv", ".parquet", ".txt"],
                                         scale=1)
            check = gr.Button("Check data", elem_id="check-data")
            with gr.Row():
                formats = gr.Markdown(elem_id="formats")
                summary = gr.Textbox(label="counts and token lengths", lines=3, elem_id="data-summary")
            problems = gr.Textbox(label="problems (FILE:LINE)", lines=3, elem_id="problems")
            with gr.Row():
                preview = gr.HighlightedText(label="preview (highlighted: trained tokens)", elem_id="preview",
                                             color_map={"trained": "#8fd19e"}, show_legend=True)
                histogram = gr.BarPlot(x="tokens", y="samples", title="token lengths", elem_id="histogram",
                                       sort=None)
        with gr.Accordion("3 · Method and settings", open=True):
            with gr.Row():
                run_name = gr.Textbox(defaults.run_name, label="run name", elem_id="run-name")
                stage = gr.Dropdown(list(STAGES), value=defaults.stage, label="stage")
                method = gr.Dropdown(list(METHODS), value=defaults.method, label="method")
                lora_r = gr.Number(defaults.lora_r, precision=0, label="LoRA rank")
                lora_target = gr.Textbox(defaults.lora_target, label="LoRA targets (all, or names)")
            with gr.Row():
                lr = gr.Number(defaults.learning_rate, label="learning rate", elem_id="lr")
                epochs = gr.Number(defaults.num_epochs, label="epochs")
                max_steps = gr.Number(defaults.max_steps, precision=0, label="max steps (-1: epochs)",
                                      elem_id="max-steps")
                batch = gr.Number(defaults.batch_size, precision=0, label="batch size")
                cutoff = gr.Number(defaults.cutoff_len, precision=0, label="cutoff (tokens)")
                packing = gr.Radio(list(PACKING), value=defaults.packing, label="packing")
                log_every = gr.Number(defaults.logging_steps, precision=0, label="log every (steps)",
                                      elem_id="log-every")
                save_every = gr.Number(defaults.save_steps, precision=0, label="checkpoint every (steps)",
                                       elem_id="save-steps")
            fields = [model, data, run_name, stage, method, lora_r, lora_target, lr, epochs, max_steps, batch,
                      cutoff, packing, log_every, save_every]
            yaml_box = gr.Code(language="yaml", label="the config file (runs/NAME.yaml)", elem_id="yaml",
                               interactive=False)
            config_problem = gr.Markdown(elem_id="config-problem")
            download = gr.DownloadButton("Download YAML", elem_id="download-yaml")
        with gr.Accordion("4 · Training", open=True):
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="start")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
                resume = gr.Button("Resume", elem_id="resume")
            action = gr.Markdown(elem_id="action")
            status = gr.Markdown(elem_id="status")
            with gr.Row():
                curve = gr.HTML(loss_svg([]), label="loss", elem_id="loss-curve")
                log = gr.Textbox(label="log", lines=12, max_lines=12, autoscroll=True, elem_id="log")
            runs = gr.Dataframe(headers=["run", "status", "step", "loss", "checkpoint", "error"],
                                label="runs in the folder", interactive=False, elem_id="runs")
        with gr.Accordion("5 · After training", open=True):
            with gr.Row():
                tuned = gr.Chatbot(label="fine-tuned", height=300, elem_id="chat-tuned")
                base = gr.Chatbot(label="base model", height=300, elem_id="chat-base")
            with gr.Row():
                message = gr.Textbox(show_label=False, placeholder="a message for both models", scale=5,
                                     elem_id="message")
                send = gr.Button("Send", scale=1, elem_id="send")
            with gr.Row():
                test_data = gr.Textbox(label="test set for compare (base vs fine-tuned)", scale=3, elem_id="test-data")
                compare = gr.Button("Compare", scale=1, elem_id="compare")
                merge = gr.Button("Merge LoRA", scale=1, elem_id="merge")
                quant = gr.Dropdown(list(QUANTS), value="f16", label="GGUF type", scale=1)
                export = gr.Button("Export GGUF", scale=1, elem_id="export")
            command_out = gr.Textbox(label="command output", lines=8, elem_id="command-output")
            report = gr.Markdown(elem_id="report")

        for field in fields:
            field.change(board.show_config, fields, [yaml_box, download, config_problem])
        app.load(board.show_config, fields, [yaml_box, download, config_problem])
        upload.upload(e(board.upload), upload, data)
        import_gguf.click(e(board.import_gguf), model, [import_out, model])
        check.click(e(board.check), fields, [formats, problems, summary, preview, histogram])
        start.click(e(board.start), fields, action)
        stop.click(e(board.stop), run_name, action)
        resume.click(e(board.resume), run_name, action)
        timer = gr.Timer(1.0)
        timer.tick(board.progress, run_name, [status, curve, log, runs], show_progress="hidden")
        for trigger in (message.submit, send.click):
            trigger(e(board.chat), [message, run_name, tuned, base], [message, tuned, base])
        compare.click(e(board.compare), [run_name, test_data], [command_out, report])
        merge.click(e(board.merge), run_name, command_out)
        export.click(e(board.export), [run_name, quant], command_out)
    return app


def launch(runs: str | Path, defaults: Settings, host: str = "127.0.0.1", port: int = 7861, share: bool = False,
           password: str | None = None, user: str = "tunekit", block: bool = True):
    """Serve the board; another address than 127.0.0.1, or a share link, only behind a password."""
    exposed = share or host not in ("127.0.0.1", "localhost", "::1")
    if exposed and not password:
        raise TunekitError("the board starts training and runs commands: to open it beyond this machine "
                           "(--share or --host), also give --password (or $TUNEKIT_BOARD_PASSWORD)")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    board = Board(runs)
    app = build_app(board, defaults)
    app.queue(default_concurrency_limit=4)
    print(f"training board on http://{host}:{port}{' (and a public share link)' if share else ''}; Ctrl-C stops",
          flush=True)
    try:
        app.launch(server_name=host, server_port=port, share=share, inbrowser=False, prevent_thread_lock=not block,
                   quiet=True, show_error=True, auth=(user, password) if password else None,
                   allowed_paths=[str(board.downloads)], css=CSS)
    finally:
        if block:
            board.close()
    return app

