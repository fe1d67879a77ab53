"""`python -m bench.dashboard`: what operators' pages and scrapes cost as history grows."""
