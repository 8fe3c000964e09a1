from tollway.researcher.app import main

main()
