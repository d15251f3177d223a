"""What people look at: drawings, plots and the HTML report."""
