from tcvae.cli import main

main()
