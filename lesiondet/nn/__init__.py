"""Networks shared by every task: the offline ImageNet backbones."""
