"""tunekit: fine-tune open LLMs on your own data, then compare, merge, chat with and serve them.

The flow is one way: dataset files -> Conversation -> ids + labels -> Trainer -> run
directory -> Engine -> front ends. See README.md for the commands.
"""

__version__ = "0.1.0"

from tunekit.noise import silence_known_noise

silence_known_noise()
