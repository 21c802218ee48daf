"""`minigemini chat`: talk to a model about images, in a terminal or single-shot.

The conversation template is the one the model's config names (`config.template`). Images given
with `--image` (or `/image PATH` during the chat) are attached to the next user turn as `<image>`
placeholders. Interactive answers stream token by token; `--prompt` answers once and exits
(greedy by default, so the same input gives the same output). With `--generate-images` the
answer's `<h>...</h>` description is drawn by a diffusers pipeline (see `imagegen.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .imagegen import DEFAULT_MARKERS, DEFAULT_TRIGGER, add_generation_request, images_for_answer

if TYPE_CHECKING:  # torch loads only when a chat runs, so `minigemini --help` stays fast
    from .generate import GenerationOptions, Generator, ImageLike

HELP = "commands: /image PATH (attach to the next message), /reset (new conversation), /quit"


class ChatSession:
    """A multi-turn conversation: messages so far, images so far, and the generation settings."""

    def __init__(self, generator: Generator, images: Sequence[ImageLike] = (), options: GenerationOptions | None = None,
                 system: str | None = None, image_generator: Any = None, image_out: str | Path = "chat_images",
                 markers: Sequence[str] = DEFAULT_MARKERS, trigger: str = DEFAULT_TRIGGER,
                 keep_attention: bool = False) -> None:
        from .generate import GenerationOptions

        self.generator = generator
        self.keep_attention = keep_attention  # record the mining maps of every answer in `attention`
        self.options = options or GenerationOptions(max_new_tokens=512)
        self.system = system
        self.image_generator = image_generator
        self.image_out = Path(image_out)
        self.markers, self.trigger = tuple(markers), trigger
        self.reset()
        for image in images:
            self.add_image(image)

    def reset(self) -> None:
        """Forget the conversation and its images."""
        self.messages: list[dict[str, str]] = [{"role": "system", "content": self.system}] if self.system else []
        self.images: list[ImageLike] = []
        self.pending: list[ImageLike] = []
        self.asked: list[tuple[str, int]] = []  # per turn: the user's text and how many images it brought
        self.attention: list[Any] | None = None  # ImageAttention per image of the last answer (keep_attention)
        self.turn = 0

    def add_image(self, image: ImageLike) -> None:
        """Attach an image (checked now) to the next user message."""
        from minigemini.model.processing import load_image

        if isinstance(image, (str, Path)) and not Path(image).is_file():
            raise FileNotFoundError(f"image {image} does not exist")
        load_image(image)  # fail early on unreadable files
        self.pending.append(image)

    def user_message(self, text: str) -> str:
        """`text` with one `<image>` line per pending image (unless the text already places them)."""
        token = self.generator.processor.config.image_token
        placed = text.count(token)
        if placed and placed != len(self.pending):
            raise ValueError(f"the message holds {placed} {token} placeholders but {len(self.pending)} new images "
                             "are attached; attach one image per placeholder (or write no placeholder)")
        if not placed:
            text = f"{token}\n" * len(self.pending) + text
        if self.image_generator is not None:
            text = add_generation_request(text, self.trigger)
        return text

    def ask(self, text: str, on_piece: Callable[[str], None] | None = None) -> str:
        """The model's answer to `text` (streamed piece by piece to `on_piece` if given); kept in the history."""
        if on_piece is None:
            message, images, prompt = self._prepare(text)
            with self._recording() as recorder:
                answer = self.generator.generate([prompt], [images], self.options)[0]
            return self._commit(text, message, images, answer, recorder)
        pieces = []
        for piece in self.ask_stream(text):
            pieces.append(piece)
            on_piece(piece)
        return self.messages[-1]["content"]

    def ask_stream(self, text: str) -> Iterator[str]:
        """The answer to `text` piece by piece as it is generated; kept in the history once complete."""
        message, images, prompt = self._prepare(text)
        pieces = []
        with self._recording() as recorder:
            for piece in self.generator.stream(prompt, images, self.options):
                pieces.append(piece)
                yield piece
        self._commit(text, message, images, "".join(pieces).strip(), recorder)

    def undo(self) -> str:
        """Forget the last turn (its images are attached to the next message again); returns its text."""
        if not self.asked:
            raise ValueError("there is no answer to redo yet; ask something first")
        text, n_new = self.asked.pop()
        del self.messages[-2:]
        self.pending = self.images[len(self.images) - n_new:] + self.pending
        self.images = self.images[:len(self.images) - n_new]
        self.turn -= 1
        return text

    def _prepare(self, text: str) -> tuple[str, list[ImageLike], str]:
        message = self.user_message(text)
        images = [*self.images, *self.pending]
        prompt = self.generator.chat_prompt([*self.messages, {"role": "user", "content": message}])
        return message, images, prompt

    def _recording(self) -> Any:
        from .attention import record

        return record(self.generator.model) if self.keep_attention else contextlib.nullcontext()

    def _commit(self, text: str, message: str, images: list[ImageLike], answer: str, recorder: Any) -> str:
        self.messages += [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
        self.asked.append((text, len(self.pending)))
        self.images, self.pending = images, []
        self.turn += 1
        self.attention = None
        if recorder is not None and recorder.weights is not None:
            from .attention import split_by_image

            self.attention = split_by_image(recorder.weights, self.generator.processor, images)
        return answer

    def draw(self, answer: str) -> dict[str, Any] | None:
        """Images for the answer's `<h>...</h>` descriptions, saved with the answer under `image_out`."""
        if self.image_generator is None:
            return None
        return images_for_answer(answer, self.image_generator, self.image_out, stem=f"turn{self.turn}",
                                 markers=self.markers)


DEVICE_HELP = "cuda, cuda:1, cpu, ... (default auto: CUDA if available, else CPU)"
DTYPE_HELP = ("float32, bfloat16 or float16 (default auto: bfloat16 on GPUs that support it, float16 on other GPUs, "
              "float32 on CPU)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `chat` command."""
    p = subparsers.add_parser("chat", help="chat with a model about images (interactive, or one --prompt)",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--model", required=True, help="minigemini model folder")
    p.add_argument("--image", action="append", default=[], metavar="FILE", help="image for the first message "
                   "(repeatable)")
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--max-new-tokens", type=int, default=512, help="longest answer in tokens (default 512); "
                   "generation stops earlier at the template's end of turn")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default, deterministic)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: keep the smallest set of tokens "
                   "whose probability reaches P (with --temperature > 0; default: no cut)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.add_argument("--template", default=None, help="override the conversation template named in the model config")
    p.add_argument("--save-attention", default=None, metavar="DIR",
                   help="after each answer write the patch-info-mining attention maps to DIR: "
                        "turn<N>_img<k>_<view>.png (HR overlay + LR image), .npy and turn<N>.safetensors")
    add_image_generation_arguments(p)
    p.set_defaults(func=run)


def add_image_generation_arguments(p: argparse.ArgumentParser) -> None:
    """The --generate-images family of options."""
    from .imagegen import DEFAULT_DIFFUSION_MODEL

    g = p.add_argument_group("image generation (needs diffusers: pip install 'minigemini[gen]')")
    g.add_argument("--generate-images", action="store_true",
                   help="ask for an image description (<h>...</h>) and draw it with a diffusion pipeline")
    g.add_argument("--diffusion-model", default=DEFAULT_DIFFUSION_MODEL, help="pipeline folder or hub id")
    g.add_argument("--image-out", default="chat_images", help="folder for generated images + answers")
    g.add_argument("--gen-height", type=int, default=None, help="height of generated images in pixels "
                   "(default: the pipeline's)")
    g.add_argument("--gen-width", type=int, default=None, help="width of generated images in pixels "
                   "(default: the pipeline's)")
    g.add_argument("--gen-steps", type=int, default=30, help="diffusion denoising steps (default 30)")
    g.add_argument("--gen-guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    g.add_argument("--gen-markers", nargs=2, default=list(DEFAULT_MARKERS), metavar=("OPEN", "CLOSE"),
                   help="strings around the image description in the answer (default <h> </h>, as MGM)")
    g.add_argument("--gen-trigger", default=DEFAULT_TRIGGER, help="appended to the user message (MGM: ' <GEN>')")


def options_from_args(args: argparse.Namespace) -> GenerationOptions:
    """Decoding options from CLI arguments (temperature 0 = greedy)."""
    return decoding_options(args.max_new_tokens, args.temperature, args.top_p, args.seed)


def decoding_options(max_new_tokens: int, temperature: float, top_p: float | None = None,
                     seed: int | None = None) -> GenerationOptions:
    """Greedy when `temperature` is 0, else sampling at that temperature (the CLI's and the web page's rule)."""
    from .generate import GenerationOptions

    sample = temperature > 0
    return GenerationOptions(max_new_tokens=int(max_new_tokens), do_sample=sample,
                             temperature=temperature if sample else 1.0, top_p=top_p, seed=seed)


def run(args: argparse.Namespace) -> int:
    """Run `minigemini chat` from parsed arguments."""
    image_generator = None
    if args.generate_images:
        from .imagegen import ImageGenerator

        image_generator = ImageGenerator.from_pretrained(
            args.diffusion_model, device=args.device, dtype=args.dtype, height=args.gen_height,
            width=args.gen_width, num_inference_steps=args.gen_steps, guidance_scale=args.gen_guidance)
    from .generate import Generator

    generator = Generator.from_pretrained(args.model, device=args.device, dtype=args.dtype, template=args.template)
    session = ChatSession(generator, args.image, options_from_args(args), system=args.system,
                          image_generator=image_generator, image_out=args.image_out, markers=args.gen_markers,
                          trigger=args.gen_trigger, keep_attention=args.save_attention is not None)
    if args.prompt is not None:
        answer = session.ask(args.prompt)
        print(answer)
        report_images(session.draw(answer))
        report_attention(session, args.save_attention)
        return 0
    return interactive(session, args.save_attention)


def report_attention(session: ChatSession, folder: str | None) -> None:
    """Save the last answer's mining maps under `folder` (when asked) and say where."""
    if folder is None:
        return
    if not session.attention:
        print("[no attention maps: this turn encoded no image]", file=sys.stderr)
        return
    from .attention import save_attention

    files = save_attention(session.attention, folder, f"turn{session.turn}")
    print(f"[attention maps saved: {', '.join(str(f) for f in files if f.suffix == '.png')} (+ .npy, "
          f"{files[-1].name})]", file=sys.stderr)


def report_images(record: dict[str, Any] | None) -> None:
    """Print where generated images went (or why none were made)."""
    if record is None:
        return
    for path in record["images"]:
        print(f"[image saved: {path}]")
    if not record["images"]:
        why = " (an opening marker was never closed)" if record.get("unclosed_marker") else ""
        print(f"[no image description in the answer{why}]", file=sys.stderr)


def interactive(session: ChatSession, attention_dir: str | None = None) -> int:
    """The terminal loop: read a line, stream the answer; /image, /reset, /quit."""
    print(f"minigemini chat ({session.generator.template_name} template). {HELP}", file=sys.stderr)
    while True:
        try:
            line = input("USER: ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            session.reset()
            print("[conversation cleared]", file=sys.stderr)
            continue
        if line.startswith("/image"):
            try:
                session.add_image(line[len("/image"):].strip())
                print(f"[{len(session.pending)} image(s) attached to the next message]", file=sys.stderr)
            except (OSError, ValueError) as exc:
                print(f"[cannot use that image: {exc}]", file=sys.stderr)
            continue
        if line.startswith("/"):
            print(HELP, file=sys.stderr)
            continue
        print("ASSISTANT: ", end="", flush=True)
        try:
            answer = session.ask(line, on_piece=lambda piece: print(piece, end="", flush=True))
        except ValueError as exc:
            print(f"\n[{exc}]", file=sys.stderr)
            continue
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
            continue
        print()
        report_images(session.draw(answer))
        report_attention(session, attention_dir)
