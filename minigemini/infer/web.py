"""`minigemini web MODEL_DIR`: a Gradio page to chat with a model about images, and see where it looked.

Upload one or more images, ask, and the answer streams in as it is generated (`Generator.stream`,
the one streaming path). Turns, images and prompts are handled by `ChatSession`, exactly as in
`minigemini chat`, so the same question with the same (greedy) settings gives the same answer.
"Where did it look" shows the patch-info-mining attention recorded during that answer's own forward
pass. With `--imagegen PIPELINE` a generation request shows the LLM's image prompt and the image.
Bad input (a file that is not an image, an empty question, a pipeline that does not load) gets a
one-line message in the page; tracebacks go to the server's log only.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .chat import DEVICE_HELP, DTYPE_HELP, ChatSession, decoding_options
from .imagegen import extract_image_prompts

if TYPE_CHECKING:  # torch loads only when the page runs, so `minigemini --help` stays fast
    from .generate import Generator

log = logging.getLogger(__name__)
ALL_TOKENS = -1  # the token slider's "every LR token" position


class WebChat:
    """One browser session: the conversation and what the chat box shows."""

    def __init__(self, app: "WebApp") -> None:
        out = tempfile.mkdtemp(prefix="session-", dir=app.files_dir)
        self.session = ChatSession(app.generator, image_generator=app.image_generator, image_out=out,
                                   keep_attention=app.generator.model.mining is not None)
        self.display: list[dict[str, Any]] = []
        self.last_text = ""


class WebApp:
    """The page's handlers over a loaded `Generator` (callable without a browser, e.g. in tests)."""

    def __init__(self, generator: Generator, model_name: str = "model", image_generator: Any = None,
                 imagegen_error: str | None = None, files_dir: str | Path | None = None) -> None:
        self.generator = generator
        self.model_name = model_name
        self.image_generator = image_generator
        self.imagegen_error = imagegen_error
        self.files_dir = str(files_dir or tempfile.mkdtemp(prefix="minigemini-web-"))  # generated images
        Path(self.files_dir).mkdir(parents=True, exist_ok=True)

    # ---- what the page says about the model ----------------------------------------------------
    def info(self) -> str:
        """Model name, template, variant (normal/HD), visual tokens per image, and image generation state."""
        cfg = self.generator.processor.config
        grid = cfg.image_grid
        variant = (f"HD ({grid}x{grid} crops{' + global view' if cfg.image_global else ''})" if grid > 1
                   else "normal")
        mining = "LR + HR with patch info mining" if cfg.use_hr else "LR only (no HR branch)"
        lines = [f"**{self.model_name}** · template `{self.generator.template_name}` · variant **{variant}** · "
                 f"{cfg.num_image_tokens} visual tokens per image · {mining} · LR {cfg.image_size}px, "
                 f"HR {cfg.image_size_aux}px"]
        if self.image_generator is not None:
            lines.append("Image generation is on: ask for a picture and the model's image prompt is drawn.")
        if self.imagegen_error:
            lines.append(f"⚠️ Image generation is off: {self.imagegen_error}")
        return "\n\n".join(lines)

    # ---- handlers --------------------------------------------------------------------------------
    def send(self, chat: WebChat | None, text: str, files: list[str] | None, temperature: float, top_p: float,
             max_tokens: float) -> Iterator[tuple]:
        """Attach the uploaded images, ask `text`, stream the answer (yields the page's outputs)."""
        chat = chat or WebChat(self)
        text = (text or "").strip()
        if not text:
            yield self._outputs(chat, "⚠️ Type a question first (the message box is empty).", keep_input=True)
            return
        try:
            self._attach(chat, files or [])
        except (ValueError, OSError) as exc:
            yield self._outputs(chat, f"⚠️ {exc}", keep_input=True)
            return
        restore = list(chat.display)
        for name in chat.session.pending:
            chat.display.append({"role": "user", "content": {"path": str(name)}})
        chat.display.append({"role": "user", "content": text})
        yield from self._answer(chat, text, (temperature, top_p, max_tokens), restore)

    def regenerate(self, chat: WebChat | None, temperature: float, top_p: float, max_tokens: float) -> Iterator[tuple]:
        """Ask the last question again (its images stay attached), replacing the last answer."""
        if chat is None or not chat.session.asked:
            yield self._outputs(chat or WebChat(self), "⚠️ Nothing to regenerate yet: ask a question first.")
            return
        text = chat.session.undo()
        while chat.display and chat.display[-1]["role"] == "assistant":
            chat.display.pop()
        yield from self._answer(chat, text, (temperature, top_p, max_tokens), list(chat.display))

    def clear(self, chat: WebChat | None) -> tuple:
        """A new conversation (images forgotten)."""
        chat = chat or WebChat(self)
        chat.session.reset()
        chat.display = []
        return self._outputs(chat, "Conversation cleared.")

    def attention_view(self, chat: WebChat | None, choice: str | None, token: float) -> tuple[Any, str]:
        """The overlay (HR image + map, LR image beside it) for the chosen image/view and LR token (-1 = all)."""
        if self.generator.model.mining is None:
            return None, "This model has no HR branch (LR only), so there is no patch-info-mining attention."
        maps = chat.session.attention if chat is not None else None
        if not maps or not choice:
            return None, "Ask a question about an image: the map of that answer appears here."
        k, view_name = _parse_choice(choice)
        if k >= len(maps) or view_name not in maps[k].views:
            return None, f"⚠️ No attention map for {choice}."
        view = maps[k].views[view_name]
        n = view.weights.shape[0]
        token_i = int(token)
        if token_i >= n:
            return None, f"⚠️ This view has {n} LR tokens (0..{n - 1}); pick one of them or -1 for all."
        which = "every LR token" if token_i == ALL_TOKENS else f"LR token {token_i} (row {token_i // view.grid}, " \
                                                               f"column {token_i % view.grid})"
        caption = (f"Image {k + 1}, {view_name} view: patch-info-mining weights of {which} over its own "
                   f"{view.cells}x{view.cells} HR cells (left: HR image, right: LR image; brighter = more weight; "
                   f"each window's weights sum to 1).")
        return view.overlay(None if token_i == ALL_TOKENS else token_i, side=max(view.hr_image.size[0], 384)), caption

    # ---- internals --------------------------------------------------------------------------------
    def _attach(self, chat: WebChat, files: list[str]) -> None:
        """Check every upload with the model's own preprocessing before attaching any."""
        processor = self.generator.processor
        for path in files:
            name = Path(path).name
            try:
                processor.preprocess_image(path)
            except Exception as exc:  # PIL raises several kinds (OSError, DecompressionBombError, ValueError...)
                log.info("rejected upload %s", path, exc_info=True)
                raise ValueError(f"Cannot use {name}: it is not an image this model can read "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
                                 "Upload a PNG, JPEG, WebP, GIF or BMP image.") from exc
        for path in files:
            chat.session.add_image(path)

    def _answer(self, chat: WebChat, text: str, settings: tuple[float, float, float],
                restore: list[dict[str, Any]]) -> Iterator[tuple]:
        """Stream the answer into the chat box; on failure the box and the attachments go back to `restore`."""
        temperature, top_p, max_tokens = settings
        chat.session.options = decoding_options(int(max_tokens), float(temperature),
                                                top_p if top_p and top_p < 1 else None)
        chat.display.append({"role": "assistant", "content": ""})
        pieces = ""
        try:
            for piece in chat.session.ask_stream(text):
                pieces += piece
                chat.display[-1] = {"role": "assistant", "content": pieces}
                yield self._outputs(chat, "Generating…")
            chat.display[-1] = {"role": "assistant", "content": chat.session.messages[-1]["content"]}
            status = self._draw(chat)
        except Exception as exc:  # shown as one line; the traceback goes to the server log
            log.exception("generation failed")
            chat.display, chat.session.pending = restore, []  # the uploads stay in the box for a retry
            yield self._outputs(chat, f"⚠️ The model could not answer: {type(exc).__name__}: {exc}".splitlines()[0],
                                keep_input=True)
            return
        yield self._outputs(chat, status, attention=True)

    def _draw(self, chat: WebChat) -> str:
        """Images for the answer's `<h>...</h>` prompts (image generation on); returns the status line."""
        session = chat.session
        if session.image_generator is None:
            return "Done."
        answer = session.messages[-1]["content"]
        if not extract_image_prompts(answer, session.markers):
            return "Done (the answer holds no image prompt, so nothing was drawn)."
        try:
            record = session.draw(answer)
        except Exception as exc:
            log.exception("image generation failed")
            return f"⚠️ Drawing the image failed: {type(exc).__name__}: {exc}".splitlines()[0]
        for prompt, path in zip(record["image_prompts"], record["images"]):
            chat.display.append({"role": "assistant", "content": f"Image prompt: {prompt}"})
            chat.display.append({"role": "assistant", "content": {"path": path}})
        return f"Done: drew {len(record['images'])} image(s)."

    def _outputs(self, chat: WebChat, status: str, keep_input: bool = False, attention: bool = False) -> tuple:
        """(state, chat box, status, message box, uploads, attention choice, token slider, overlay, caption)."""
        import gradio as gr

        keep = gr.update()
        message, uploads = (keep, keep) if keep_input else ("", None)
        if not attention:
            return chat, list(chat.display), status, message, uploads, keep, keep, keep, keep
        choices = [f"image {k + 1} · {name}" for k, entry in enumerate(chat.session.attention or [])
                   for name in entry.views]
        choice = next((c for c in reversed(choices) if not c.endswith("global")), None)
        n = _token_count(chat, choice)
        image, caption = self.attention_view(chat, choice, ALL_TOKENS)
        return (chat, list(chat.display), status, message, uploads, gr.update(choices=choices, value=choice),
                gr.update(maximum=max(n - 1, 0), value=ALL_TOKENS), image, caption)


def _parse_choice(choice: str) -> tuple[int, str]:
    """"image 2 · main" -> (1, "main")."""
    head, _, view = choice.partition(" · ")
    return int(head.split()[-1]) - 1, view


def _token_count(chat: WebChat | None, choice: str | None) -> int:
    if chat is None or not choice or not chat.session.attention:
        return 1
    k, view = _parse_choice(choice)
    return chat.session.attention[k].views[view].weights.shape[0]


def build_page(app: WebApp) -> Any:
    """The Gradio Blocks page wired to `app`'s handlers."""
    import gradio as gr

    with gr.Blocks(title=f"minigemini · {app.model_name}") as page:
        gr.Markdown(f"# minigemini web\n{app.info()}", elem_id="model-info")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=420)
                question = gr.Textbox(label="Question", placeholder="Ask about the images…", elem_id="question")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    regenerate = gr.Button("Regenerate", elem_id="regenerate")
                    clear = gr.Button("Clear", elem_id="clear")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=2):
                files = gr.File(label="Images for the next message", file_count="multiple", type="filepath",
                                elem_id="uploads")
                with gr.Accordion("Generation settings", open=False):
                    temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p (1 = off)")
                    max_tokens = gr.Slider(1, 2048, value=512, step=1, label="Max new tokens", elem_id="max-tokens")
        with gr.Accordion("Where did it look? (patch-info-mining attention)", open=False, elem_id="attention"):
            with gr.Row():
                choice = gr.Dropdown(label="Image / view", choices=[], elem_id="attention-choice")
                token = gr.Slider(ALL_TOKENS, 0, value=ALL_TOKENS, step=1, label="LR token (-1 = all)",
                                  elem_id="attention-token")
            overlay = gr.Image(label="HR image with the attention map | LR image", type="pil", elem_id="overlay",
                               height=400)
            caption = gr.Markdown("Ask a question about an image: the map of that answer appears here.",
                                  elem_id="attention-caption")
        outputs = [state, chatbot, status, question, files, choice, token, overlay, caption]
        settings = [temperature, top_p, max_tokens]
        for trigger in (send.click, question.submit):
            trigger(app.send, [state, question, files, *settings], outputs, concurrency_id="model")
        regenerate.click(app.regenerate, [state, *settings], outputs, concurrency_id="model")
        clear.click(app.clear, [state], outputs)
        choice.change(lambda c, name: gr.update(maximum=max(_token_count(c, name) - 1, 0), value=ALL_TOKENS),
                      [state, choice], [token])
        for event in (choice.change, token.change):
            event(app.attention_view, [state, choice, token], [overlay, caption])
    return page


def load_image_generator(spec: str | None, device: str, dtype: str) -> tuple[Any, str | None]:
    """(pipeline wrapper, None), or (None, why it failed): a pipeline that does not load is reported in the page."""
    if not spec:
        return None, None
    from .imagegen import ImageGenerator

    try:
        return ImageGenerator.from_pretrained(spec, device=device, dtype=dtype), None
    except Exception as exc:  # ImportError (no diffusers), OSError (missing/bad folder), ValueError ...
        log.warning("image generation pipeline %s did not load: %s", spec, exc)
        return None, f"the pipeline {spec!r} could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0]})"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `web` command."""
    p = subparsers.add_parser("web", help="a Gradio web page: chat about images, see where mining looked",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("model", metavar="MODEL_DIR", help="minigemini model folder")
    p.add_argument("--imagegen", default=None, metavar="PIPELINE",
                   help="diffusers text-to-image pipeline (folder or hub id) to draw the model's image prompts")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (sends traffic "
                   "through Gradio's servers)")
    p.add_argument("--template", default=None, help="override the conversation template named in the model config")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model (and pipeline), build the page, serve until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ImportError("the web page needs gradio: pip install 'minigemini[web]'") from exc
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .generate import Generator

    generator = Generator.from_pretrained(args.model, device=args.device, dtype=args.dtype, template=args.template)
    image_generator, error = load_image_generator(args.imagegen, args.device, args.dtype)
    app = WebApp(generator, Path(args.model).resolve().name, image_generator, error)
    page = build_page(app)
    page.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, share=args.share,
                                                   allowed_paths=[app.files_dir], show_error=False)
    return 0
