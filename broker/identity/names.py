"""Agent names: the adjective+noun generator, validation, and hints for common mistakes."""

from __future__ import annotations

import re
import secrets

from broker.errors import BrokerError

ADJECTIVES = [
    "Red",
    "Orange",
    "Pink",
    "Black",
    "Purple",
    "Blue",
    "Brown",
    "White",
    "Green",
    "Chartreuse",
    "Lilac",
    "Fuchsia",
    "Azure",
    "Amber",
    "Coral",
    "Crimson",
    "Cyan",
    "Gold",
    "Gray",
    "Indigo",
    "Ivory",
    "Jade",
    "Lavender",
    "Magenta",
    "Maroon",
    "Navy",
    "Olive",
    "Pearl",
    "Rose",
    "Ruby",
    "Sage",
    "Scarlet",
    "Silver",
    "Teal",
    "Topaz",
    "Violet",
    "Cobalt",
    "Copper",
    "Bronze",
    "Emerald",
    "Sapphire",
    "Turquoise",
    "Sunny",
    "Misty",
    "Foggy",
    "Stormy",
    "Windy",
    "Frosty",
    "Dusty",
    "Hazy",
    "Cloudy",
    "Rainy",
    "Swift",
    "Quiet",
    "Bold",
    "Calm",
    "Bright",
    "Dark",
    "Wild",
    "Silent",
    "Gentle",
    "Rustic",
]
NOUNS = [
    "Stone",
    "Lake",
    "Dog",
    "Creek",
    "Pond",
    "Cat",
    "Bear",
    "Mountain",
    "Hill",
    "Snow",
    "Castle",
    "River",
    "Forest",
    "Valley",
    "Canyon",
    "Meadow",
    "Prairie",
    "Desert",
    "Island",
    "Cliff",
    "Cave",
    "Glacier",
    "Waterfall",
    "Spring",
    "Stream",
    "Reef",
    "Dune",
    "Ridge",
    "Peak",
    "Gorge",
    "Marsh",
    "Brook",
    "Glen",
    "Grove",
    "Hollow",
    "Basin",
    "Cove",
    "Bay",
    "Harbor",
    "Fox",
    "Wolf",
    "Hawk",
    "Eagle",
    "Owl",
    "Deer",
    "Elk",
    "Moose",
    "Falcon",
    "Raven",
    "Heron",
    "Crane",
    "Otter",
    "Beaver",
    "Badger",
    "Finch",
    "Robin",
    "Sparrow",
    "Lynx",
    "Puma",
    "Tower",
    "Bridge",
    "Forge",
    "Mill",
    "Barn",
    "Gate",
    "Anchor",
    "Lantern",
    "Beacon",
    "Compass",
]
_GENERATED = {(a + n).lower() for a in ADJECTIVES for n in NOUNS}
_WORDS = {w.lower() for w in ADJECTIVES + NOUNS}

# Explicit identities (``alpha-one``, ``cc-0``): one separator at least, 128 chars at most.
EXPLICIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Any name we store or look up: letters, digits and ``._-``.
NAME_SHAPE = EXPLICIT_ID

PROGRAM_NAMES = set(
    [
        "claude-code",
        "claude",
        "codex-cli",
        "codex",
        "cursor",
        "windsurf",
        "cline",
        "aider",
        "copilot",
        "github-copilot",
        "gemini-cli",
        "gemini",
        "opencode",
        "vscode",
        "neovim",
        "vim",
        "emacs",
        "zed",
        "continue",
    ]
)
MODEL_MARKERS = [
    "gpt-",
    "gpt4",
    "gpt3",
    "claude-",
    "opus",
    "sonnet",
    "haiku",
    "gemini-",
    "llama",
    "mistral",
    "codestral",
    "o1-",
    "o3-",
]
BROADCAST_WORDS = {"all", "*", "everyone", "broadcast", "@all", "@everyone"}
PLACEHOLDERS = ("YOUR_AGENT", "AGENT_NAME", "PLACEHOLDER", "<AGENT>", "{AGENT}", "$AGENT")


def generate_candidates(count: int) -> list[str]:
    """Random distinct adjective+noun names in PascalCase."""
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen[secrets.choice(ADJECTIVES) + secrets.choice(NOUNS)] = None
    return list(seen)


def is_generated_shape(name: str) -> bool:
    return name.lower() in _GENERATED


def is_explicit_id(name: str) -> bool:
    return bool(EXPLICIT_ID.match(name)) and any(c in name for c in "-_.")


def mistake_hint(name: str) -> tuple[str, str] | None:
    """Why ``name`` is probably not an agent name, as (code, advice), or None."""
    lowered = name.strip().lower()
    if lowered in PROGRAM_NAMES:
        return (
            "PROGRAM_NAME_AS_AGENT",
            f"'{name}' is a program name; pass it as `program` and let the broker pick the agent name.",
        )
    if any(marker in lowered for marker in MODEL_MARKERS):
        return (
            "MODEL_NAME_AS_AGENT",
            f"'{name}' looks like a model name; pass it as `model`, not as the agent name.",
        )
    if "@" in lowered and "." in lowered.split("@", 1)[1]:
        return ("EMAIL_AS_AGENT", f"'{name}' is an email address; agents have names like 'BlueLake'.")
    if lowered in BROADCAST_WORDS:
        return ("BROADCAST_ATTEMPT", "To write to every agent use send_message(broadcast=True, to=[]).")
    return None


def check_placeholder(value: str, what: str) -> None:
    upper = value.upper()
    if any(p in upper for p in PLACEHOLDERS) or any(
        p in upper for p in ("YOUR_PROJECT", "<PROJECT>", "{PROJECT}", "$PROJECT")
    ):
        raise BrokerError(
            "CONFIGURATION_ERROR",
            f"{what} '{value}' is a placeholder left in a prompt or config; put the real value in its place.",
        )


def validate_name(name: object, what: str = "agent name") -> str:
    """A name we can store or look up; raises with the remedy otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise BrokerError("INVALID_ARGUMENT", f"The {what} is empty. Pass a registered agent name such as 'BlueLake'.")
    name = name.strip()
    check_placeholder(name, f"The {what}")
    if not NAME_SHAPE.match(name):
        hint = mistake_hint(name)
        extra = f" {hint[1]}" if hint else ""
        raise BrokerError(
            hint[0] if hint else "INVALID_AGENT_NAME",
            f"Invalid {what} '{name}': use letters, digits and '._-' (at most 128 characters), "
            f"e.g. 'BlueLake' or 'alpha-one'.{extra}",
        )
    return name


DESCRIPTIVE_SUFFIXES = (
    "agent",
    "bot",
    "assistant",
    "helper",
    "manager",
    "coordinator",
    "developer",
    "engineer",
    "migrator",
    "refactorer",
    "fixer",
    "harmonizer",
    "integrator",
    "optimizer",
    "analyzer",
    "worker",
)
NAME_MODES = ("coerce", "strict", "always_auto")


def _looks_like_program_or_model(name: str) -> bool:
    lowered = name.lower()
    return lowered in PROGRAM_NAMES or any(marker in lowered for marker in MODEL_MARKERS)


def registration_mistake(name: str) -> tuple[str, str] | None:
    """Why ``name`` cannot be registered, as (code, advice): the lookup hints plus role names
    ('BackendHarmonizer') and login names ('alice'), which are fine to look up but not to take."""
    hint = mistake_hint(name)
    if hint:
        return hint
    lowered = name.lower()
    if lowered.endswith(DESCRIPTIVE_SUFFIXES):
        return (
            "DESCRIPTIVE_NAME",
            f"'{name}' describes a role; agent names are generated adjective+noun names such as 'BlueLake', "
            "not descriptions of the task.",
        )
    if name.islower() and name.isalnum() and 2 <= len(name) <= 16 and lowered not in _WORDS:
        return (
            "UNIX_USERNAME_AS_AGENT",
            f"'{name}' looks like a login name (e.g. from $USER), not an agent name such as 'BlueLake'.",
        )
    return None


def requested_name(name: str, mode: str) -> str | None:
    """The name a ``name`` argument registers under, or None to register a generated one.

    As the reference: an explicit id ('alpha-one', 'cc-0') that is not a program or model name
    is taken as given; otherwise the name without its non-alphanumerics ('Blue Lake' ->
    'BlueLake') must be adjective+noun. Anything else is refused under ``strict`` (with the
    mistake it looks like) and replaced by a generated name under ``coerce``; ``always_auto``
    ignores the name. A placeholder ('YOUR_AGENT') is refused in every mode: it is a setup
    mistake, and registering it would only hide it."""
    name = name.strip()
    check_placeholder(name, "The agent name")
    if mode == "always_auto":
        return None
    if is_explicit_id(name) and not _looks_like_program_or_model(name):
        return name
    plain = re.sub(r"[^A-Za-z0-9]", "", name)[:128]
    if plain and is_generated_shape(plain):
        return plain
    if mode != "strict":
        return None
    mistake = registration_mistake(name) or (registration_mistake(plain) if plain else None)
    if mistake:
        raise BrokerError(mistake[0], f"Invalid agent name '{name}'. {mistake[1]} Omit the name to have one generated.")
    raise BrokerError(
        "INVALID_AGENT_NAME",
        f"Invalid agent name format: '{name}'. Use an adjective+noun name such as 'BlueLake', an "
        "explicit identity with a separator (e.g. 'alpha-one', 'cc-0'; letters, digits and '._-', at most "
        "128 characters), or omit the name to have one generated.",
    )


def validate_new_name(name: str) -> str:
    """A name an agent may register under (``strict`` rules); raises with the remedy otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise BrokerError("INVALID_ARGUMENT", "The agent name is empty. Omit it to have one generated.")
    return requested_name(name, "strict") or name.strip()  # strict chooses a name or raises
