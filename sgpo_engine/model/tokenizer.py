"""Tokenizer: a `tokenizers.Tokenizer` (tokenizer.json) plus what transformers
reads around it: special tokens from tokenizer_config.json, EOS ids from
generation_config.json, and the jinja chat template, rendered the way
transformers' `apply_chat_template` renders it.

No transformers import: the engine runs with tokenizers + jinja2 only.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional

import tokenizers

from .files import read_json

_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_str(value: Any) -> Optional[str]:
    """tokenizer_config stores special tokens as "<s>" or as an AddedToken dict {"content": "<s>", ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _eos_list(value: Any) -> Optional[list[int]]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


class Tokenizer:
    def __init__(self, tokenizer: tokenizers.Tokenizer, tokenizer_config: Optional[dict] = None,
                 chat_template: Optional[str | dict] = None, eos_token_ids: Optional[Iterable[int]] = None,
                 fallback_ids: Optional[Mapping[str, Any]] = None):
        """tokenizer_config: the tokenizer_config.json dict; chat_template: a
        template string or {name: template}; eos_token_ids: overrides (from
        generation_config.json); fallback_ids: config.json's bos/eos/pad ids."""
        self._tok = tokenizer
        self.tokenizer_config = dict(tokenizer_config or {})
        self.chat_template = chat_template if chat_template is not None else \
            _config_chat_template(self.tokenizer_config)
        fallback = dict(fallback_ids or {})
        self.special_tokens: dict[str, str] = {}
        for attr in _SPECIAL_ATTRS:
            tok = _token_str(self.tokenizer_config.get(attr))
            if tok is not None:
                self.special_tokens[attr] = tok
        self.bos_token_id = self._special_id("bos_token", fallback.get("bos_token_id"))
        self.eos_token_id = self._special_id("eos_token", _first(fallback.get("eos_token_id")))
        self.pad_token_id = self._special_id("pad_token", fallback.get("pad_token_id"))
        # Generation stops at any of these: generation_config.json's list when given
        # (chat models list both their turn-end and end-of-text tokens there), else
        # the tokenizer's eos_token, else config.json's eos_token_id.
        if eos_token_ids is not None:
            self.eos_token_ids = frozenset(eos_token_ids)
        elif "eos_token" in self.special_tokens and self._tok.token_to_id(self.special_tokens["eos_token"]) is not None:
            self.eos_token_ids = frozenset([self._tok.token_to_id(self.special_tokens["eos_token"])])
        else:
            self.eos_token_ids = frozenset(_eos_list(fallback.get("eos_token_id")) or [])
        self._template_cache: dict[str, Any] = {}

    # ------------------------------------------------------------------
    @classmethod
    def from_folder(cls, path: str | os.PathLike) -> "Tokenizer":
        """Loads tokenizer.json (required) and, when present, tokenizer_config.json,
        chat_template.jinja (which wins over the config's template, as in
        transformers), generation_config.json and config.json."""
        path = os.fspath(path)
        tj = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tj):
            raise ValueError(f"{tj}: tokenizer.json not found")
        try:
            tok = tokenizers.Tokenizer.from_file(tj)
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise ValueError(f"{tj}: cannot read tokenizer ({e})") from None
        tcfg = read_json(os.path.join(path, "tokenizer_config.json")) or {}
        if "added_tokens_decoder" not in tcfg:
            # older checkpoints keep the named special tokens in special_tokens_map.json,
            # which transformers then reads over tokenizer_config.json
            stm = read_json(os.path.join(path, "special_tokens_map.json")) or {}
            tcfg = {**tcfg, **{k: v for k, v in stm.items() if k in _SPECIAL_ATTRS and _token_str(v)}}
        template = None
        jinja = os.path.join(path, "chat_template.jinja")
        if os.path.isfile(jinja):
            with open(jinja, encoding="utf-8") as f:
                template = f.read()
        gen = read_json(os.path.join(path, "generation_config.json")) or {}
        model_cfg = read_json(os.path.join(path, "config.json")) or {}
        eos = _eos_list(gen.get("eos_token_id"))
        fallback = {k: model_cfg.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        for k in ("bos_token_id", "pad_token_id"):
            if isinstance(gen.get(k), int):
                fallback[k] = gen[k]
        return cls(tok, tcfg, template, eos, fallback)

    def save(self, path: str | os.PathLike) -> None:
        """Writes tokenizer.json and tokenizer_config.json (chat template inside,
        readable by transformers 4 and 5)."""
        path = os.fspath(path)
        self._tok.save(os.path.join(path, "tokenizer.json"))
        cfg = dict(self.tokenizer_config)
        cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        if self.chat_template is not None:
            cfg["chat_template"] = self.chat_template if isinstance(self.chat_template, str) else \
                [{"name": k, "template": v} for k, v in self.chat_template.items()]
        with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, ensure_ascii=False)

    # ------------------------------------------------------------------
    @property
    def backend(self) -> tokenizers.Tokenizer:
        return self._tok

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (added tokens included); the
        model's vocab_size may be larger (padded)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def max_token_chars(self) -> int:
        """An upper bound on the characters of input text one token can stand for, so that
        len(text) / max_token_chars() tokens at least are needed: the longest vocabulary
        entry (byte-level entries hold one character a byte), + 1 for a space a decoder
        or pre-tokenizer adds, x 4 for a normalizer that composes characters (NFC/NFKC)."""
        if not hasattr(self, "_max_token_chars"):
            longest = max((len(t) for t in self._tok.get_vocab(with_added_tokens=True)), default=1)
            self._max_token_chars = 4 * (longest + 1)
        return self._max_token_chars

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Text -> ids; add_special_tokens runs tokenizer.json's post-processor
        (e.g. a BOS prefix), as transformers does."""
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_with_offsets(self, text: str,
                            add_special_tokens: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
        """Text -> (ids, [(start, end)]) where text[start:end] is the span of
        characters each token covers ((0, 0) for added special tokens)."""
        enc = self._tok.encode(text, add_special_tokens=add_special_tokens)
        return enc.ids, [tuple(o) for o in enc.offsets]

    def decode_with_offsets(self, ids: Iterable[int], skip_special_tokens: bool = False,
                            context: int = 4) -> tuple[str, list[tuple[int, int]]]:
        """ids -> (text, [(start, end)]): text = decode(ids), and text[start:end]
        is what token i wrote (the inverse view of encode_with_offsets, for
        generated ids, which need not be the text's canonical encoding).

        Exact for any tokenizer: what a token writes is the difference of two
        decodes of a short window ending at it (the window gives decoders that
        strip a leading space or merge bytes their context), checked against
        the full text. Tokens that only write part of a character (byte-level
        BPE, byte fallback) form a group with the token that completes it, and
        every token of the group spans the group's characters; tokens that
        write nothing (skipped special tokens) get an empty span where they
        stand. Invalid bytes decode to U+FFFD like the text does, and a U+FFFD
        the text holds is written by the first token whose window shows it.
        Cost: two small decodes per token (a window grows only while a
        character is incomplete), plus whole-prefix decodes for decoders that
        rewrite earlier text (clean-up of spaces before punctuation)."""
        ids = list(ids)
        decode = lambda part: self.decode(part, skip_special_tokens=skip_special_tokens)
        text = decode(ids)
        spans: list[tuple[int, int]] = []
        done = 0    # characters of text written by the tokens before the group
        first = 0   # the group's first token: the tokens since the last complete character
        for i in range(len(ids)):
            lo = max(0, first - context)
            before, after = decode(ids[lo:first]), decode(ids[lo:i + 1])
            piece = after[len(before):] if after.startswith(before) else None
            if piece is not None and piece.endswith("\ufffd") and not text.startswith(piece, done):
                continue  # the window ends inside a character (a replacement char the text lacks)
            if piece is None or not text.startswith(piece, done):
                # a decoder that rewrites earlier text (clean-up): compare whole prefixes
                prefix = decode(ids[:i + 1])
                piece = prefix[done:] if text.startswith(prefix) and len(prefix) >= done else None
            if piece is None or (piece == "" and first < i):
                continue  # inside a character: the group goes on
            spans += [(done, done + len(piece))] * (i + 1 - first)
            done += len(piece)
            first = i + 1
        spans += [(done, len(text))] * (len(ids) - first)  # bytes that never completed a character
        return text, spans

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        # transformers 5 applies its clean-up only when asked and never to BPE models
        if self.tokenizer_config.get("clean_up_tokenization_spaces") and \
                type(self._tok.model).__name__ != "BPE":
            text = _clean_up_tokenization(text)
        return text

    def _special_id(self, attr: str, fallback: Optional[int]) -> Optional[int]:
        tok = self.special_tokens.get(attr)
        if tok is not None and self._tok.token_to_id(tok) is not None:
            return self._tok.token_to_id(tok)
        return fallback if isinstance(fallback, int) and not isinstance(fallback, bool) else None

    # ------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tokenize: bool = False, chat_template: Optional[str] = None,
                            **kwargs) -> str | list[int]:
        """Renders messages with the chat template as transformers does (same
        sandboxed jinja environment, globals and variables: messages,
        add_generation_prompt, the named special tokens, extra kwargs). With
        tokenize=True the text is encoded without adding special tokens, as
        transformers does (the template writes them)."""
        template = self._pick_template(chat_template, kwargs.get("tools"))
        if not messages:
            raise ValueError("messages: cannot apply a chat template to an empty conversation")
        for m in messages:
            if not isinstance(m, dict):
                raise ValueError(f"messages: expected dicts, got {type(m).__name__}")
        # transformers drops None-valued keys (many templates would print "None")
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        variables = {**self.special_tokens, **kwargs}
        variables.setdefault("tools", None)
        variables.setdefault("documents", None)
        text = self._compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                               **variables)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def _pick_template(self, name_or_template: Optional[str], tools) -> str:
        t = self.chat_template
        if isinstance(t, dict):
            if name_or_template in t:
                return t[name_or_template]
            if name_or_template is not None:
                return name_or_template
            if tools is not None and "tool_use" in t:
                return t["tool_use"]
            if "default" in t:
                return t["default"]
            raise ValueError(f"chat_template: several templates {sorted(t)} and none named 'default'")
        if name_or_template is not None:
            return name_or_template
        if t is None:
            raise ValueError("chat_template: this tokenizer has no chat template "
                             "(tokenizer_config.json 'chat_template' or chat_template.jinja)")
        return t

    def _compiled(self, template: str):
        if template not in self._template_cache:
            self._template_cache[template] = _compile_template(template)
        return self._template_cache[template]


def _first(v):
    return v[0] if isinstance(v, list) and v else v


def _config_chat_template(cfg: dict) -> Optional[str | dict]:
    t = cfg.get("chat_template")
    if isinstance(t, list):  # [{"name": ..., "template": ...}, ...]
        return {e["name"]: e["template"] for e in t if isinstance(e, dict) and "name" in e and "template" in e}
    return t if isinstance(t, str) else None


def _clean_up_tokenization(text: str) -> str:
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


def _compile_template(template: str):
    """The jinja environment of transformers' chat templates: sandboxed and
    immutable (templates are untrusted code), trim_blocks/lstrip_blocks,
    loopcontrols, a non-HTML-escaping tojson, raise_exception, strftime_now,
    and namespaces that refuse underscore attributes."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for
        # transformers' assistant masks; rendering just passes its body through.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_passthrough"), [], [], body).set_lineno(lineno)

        def _passthrough(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot set underscore-prefixed namespace attributes, got {name!r}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"chat_template: invalid jinja template ({e})") from None
