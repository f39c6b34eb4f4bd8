"""What is specific to one case study or model family: model wrappers and data builders.

Modules here may import any other deploylab module; generic modules never import these.
"""
