"""`trainguard status`: what AWS says about the stack (facts), what it means (judge), and how it is shown
(render)."""
