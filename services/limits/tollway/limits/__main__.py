from tollway.limits.app import main

main()
