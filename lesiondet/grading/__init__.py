"""DR grading: fundus anatomy, the ICDR rules and the learned graders."""
