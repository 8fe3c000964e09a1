from tollway.router.app import main

main()
